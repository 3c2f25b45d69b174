#!/usr/bin/env bash
# The embedded default, no download: generated clips, a tiny VideoMAE with
# seeded random weights, MMAction2's full test loop through tools/test.py
# (dense and with NEPAM), then benchmarks against stock MMAction2: the tiny
# dense model, and ViT-B 16x224 with NEPAM (NEPAM scores windows in pixel
# space, 1536 values per tubelet: cheap next to ViT-B, not next to a toy).
#   bash tools/demo.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work_dirs/demo}
DATA=(--cfg-options test_dataloader.dataset.ann_file="$WORK/data/annotations.txt"
      test_dataloader.dataset.data_prefix.video="$WORK/data/videos")

python tools/make_videos.py "$WORK/data" --num-videos 24
python tools/init_checkpoint.py configs/demo/videomae_tiny_dense.py \
    "$WORK/tiny_random.pth"
for method in dense nepam; do
    python tools/test.py "configs/demo/videomae_tiny_$method.py" \
        "$WORK/tiny_random.pth" --work-dir "$WORK/$method" "${DATA[@]}"
done
echo "(top-1 above is that of untrained weights on 4 classes: chance is 0.25)"
python tools/benchmark.py configs/demo/videomae_tiny_dense.py \
    --batch-size 8 --repeats 10 --json "$WORK/benchmark_tiny_dense.json"
python tools/benchmark.py configs/videomae_nepam.py --repeats 2 \
    --json "$WORK/benchmark_vit-base_nepam.json"
