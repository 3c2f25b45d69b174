# VideoMAE ViT-B on Kinetics-400 with JMP at 0.90 of the dense FLOPs: blocks
# 1-10 merge similar or prune unimportant tokens, 35, 34, ... 28 of each clip
# (1568 -> 1254), with proportional attention. Not a recommended default: no
# JMP setting on the pretrained proxy is both >= 1.25x dense on CPU and
# within 0.5 top-1 of dense. This one runs at 0.99x dense (-0.5 / -0.0); at
# 0.80 of the FLOPs it lost -0.9 / -0.4 (docs/proxy.md#the-defaults-from-it).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(35, 34, 33, 32, 32, 31, 30, 30, 29, 28)),
            proportional_attention=True)))
