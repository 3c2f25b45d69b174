# VideoMAE ViT-B on Kinetics-400 with NEPAM: before the first block the most
# uniform 36% of the 1x2x2 windows of tubelets become one token each (1568 ->
# 1145 tokens, 0.70 of the dense FLOPs), with proportional attention. The
# largest NEPAM reduction that does both: 1.36x dense on CPU, -0.2 / +0.3
# top-1 on the pretrained proxy (docs/proxy.md#the-defaults-from-it).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.36),
            proportional_attention=True)))
