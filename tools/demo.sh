#!/usr/bin/env bash
# The embedded default, no download: generated clips, a tiny VideoMAE with
# seeded random weights, MMAction2's full test loop through tools/test.py
# (dense and with NEPAM), a picture of the tokens NEPAM merged, then
# benchmarks against stock MMAction2: the tiny dense model, and ViT-B 16x224
# with NEPAM (NEPAM scores windows in pixel space, 1536 values per tubelet:
# cheap next to ViT-B, not next to a toy).
#   bash tools/demo.sh [WORK_DIR]
# Writes, under WORK_DIR (default work_dirs/demo):
#   data/                        24 generated clips of 4 classes, annotations.txt
#   tiny_random.pth              the tiny model's seeded random weights
#   dense/, nepam/               MMAction2's test logs (TIMESTAMP/TIMESTAMP.log,
#                                metrics in TIMESTAMP/TIMESTAMP.json)
#   tokens_nepam.png, .gif       the tokens NEPAM made of the first clip
#   benchmark_tiny_dense.json    speed, FLOPs, memory against stock MMAction2
#   benchmark_vit-base_nepam.json
# The console says what each step runs and what it found; tools/test.py's
# full output (environment, config, hooks) is in its log files.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work_dirs/demo}
DATA=(--cfg-options test_dataloader.dataset.ann_file="$WORK/data/annotations.txt"
      test_dataloader.dataset.data_prefix.video="$WORK/data/videos")

echo "== 1/4 data and model: generated clips, a tiny VideoMAE, random weights"
python tools/make_videos.py "$WORK/data" --num-videos 24
python tools/init_checkpoint.py configs/demo/videomae_tiny_dense.py \
    "$WORK/tiny_random.pth"
echo "== 2/4 MMAction2's test loop (tools/test.py): dense, then NEPAM"
for method in dense nepam; do
    python tools/test.py "configs/demo/videomae_tiny_$method.py" \
        "$WORK/tiny_random.pth" --work-dir "$WORK/$method" "${DATA[@]}"
done
cat <<'NOTE'
What the acc/ figures above mean: the weights are untrained (seeded random)
and there are 4 classes, so top-1 is at chance (0.25 expected); top-5 is 1.0
whatever the weights (4 classes are all in the top 5); mean1 is top-1
averaged over the classes. The demo shows that the whole path runs.
NOTE
echo "== 3/4 the tokens NEPAM made of the first clip (visualize_tokens.py)"
CLIP=$(head -n 1 "$WORK/data/annotations.txt" | cut -d ' ' -f 1)
python tools/visualize_tokens.py "$WORK/data/videos/$CLIP" \
    configs/demo/videomae_tiny_nepam.py --checkpoint "$WORK/tiny_random.pth" \
    --out "$WORK/tokens_nepam"
echo "== 4/4 against stock MMAction2 (tools/benchmark.py): the tiny dense" \
    "model, then ViT-B 16x224 with NEPAM"
python tools/benchmark.py configs/demo/videomae_tiny_dense.py \
    --batch-size 8 --repeats 10 --json "$WORK/benchmark_tiny_dense.json"
python tools/benchmark.py configs/videomae_nepam.py --repeats 2 \
    --json "$WORK/benchmark_vit-base_nepam.json"
echo "wrote $WORK: data/, tiny_random.pth, dense/ and nepam/ (test logs)," \
    "tokens_nepam.png and .gif, benchmark_tiny_dense.json," \
    "benchmark_vit-base_nepam.json"
