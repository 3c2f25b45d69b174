# VideoMAE ViT-B on Kinetics-400 with NEPAM at its default: before the first
# block, the most uniform 10% of the 1x2x2 windows (squares of tubelets in
# space) become one token each (1568 -> 1451 tokens). Chosen on the
# realistic proxy as the setting that keeps >= 98% of the dense predictions
# (docs/proxy_results.md); videomae_nepam_half.py merges more.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.1))))
