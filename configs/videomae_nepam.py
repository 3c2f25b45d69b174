# VideoMAE ViT-B on Kinetics-400 with NEPAM at its default: before the first
# block, the most uniform 36% of the 1x2x2 windows (squares of tubelets in
# space) become one token each, 0.70 of the dense FLOPs, with proportional
# attention (each merged token's log size added to its key logits). The
# largest reduction that the calibrated, MAE-pretrained proxy kept within
# 0.5 top-1 of dense on both trained models (NEPAM's 2x, half the FLOPs,
# lost 0.9 / 0.6 there; docs/proxy.md); videomae_nepam_half.py merges more.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.36),
            proportional_attention=True)))
