#!/usr/bin/env bash
# The embedded default, no download: generated clips, a tiny VideoMAE with
# seeded random weights, MMAction2's full test loop through tools/test.py,
# then the benchmark against stock MMAction2 (tiny model and ViT-B 16x224).
#   bash tools/demo.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-work_dirs/demo}
CONFIG=configs/demo/videomae_tiny_dense.py

python tools/make_videos.py "$WORK/data" --num-videos 24
python tools/init_checkpoint.py "$CONFIG" "$WORK/tiny_random.pth"
python tools/test.py "$CONFIG" "$WORK/tiny_random.pth" --work-dir "$WORK" \
    --cfg-options test_dataloader.dataset.ann_file="$WORK/data/annotations.txt" \
    test_dataloader.dataset.data_prefix.video="$WORK/data/videos"
echo "(top-1 above is that of untrained weights on 4 classes: chance is 0.25)"
python tools/benchmark.py "$CONFIG" --batch-size 8 --repeats 10 \
    --json "$WORK/benchmark_tiny.json"
python tools/benchmark.py configs/videomae_dense.py --repeats 2 \
    --json "$WORK/benchmark_vit-base.json"
