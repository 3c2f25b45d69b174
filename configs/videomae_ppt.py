# VideoMAE ViT-B on Kinetics-400 with PPT at 0.60 of the dense FLOPs: blocks
# 1-10 pool (ToMe) or prune 156, 141, ... 61 tokens of each clip (1568 ->
# 549) as the spread of its importance says (threshold 8, tools/calibrate.py's
# choice), proportional attention on. It does both: 1.64x dense on CPU, -0.3
# / -0.2 top-1 on the pretrained proxy (docs/proxy.md#the-defaults-from-it).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='PPT',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(156, 141, 127, 114, 103, 92, 83, 75, 67, 61),
                threshold=8.),
            proportional_attention=True)))
