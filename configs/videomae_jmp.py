# VideoMAE ViT-B on Kinetics-400 with JMP at 0.90 of the dense FLOPs: in
# every block from 1 to 10 each clip merges its most similar tokens and
# prunes dissimilar unimportant ones, 35, 34, ... 28 tokens (1568 -> 1254),
# with proportional attention. The largest reduction that the calibrated,
# MAE-pretrained proxy kept within 0.5 top-1 of dense on both trained models:
# at JMP's DeiT-S budget, 0.6 of the FLOPs, it lost 1.6 / 1.2 there
# (docs/proxy.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(35, 34, 33, 32, 32, 31, 30, 30, 29, 28)),
            proportional_attention=True)))
