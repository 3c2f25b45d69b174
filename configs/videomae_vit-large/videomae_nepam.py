# VideoMAE ViT-L on Kinetics-400 with NEPAM as configs/videomae_nepam.py sets
# it for ViT-B, at the same 0.70 of the dense FLOPs: before the first block the
# most uniform 37% of the 1x2x2 windows of tubelets become one token each (1568
# -> 1133 tokens), with proportional attention.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.37),
            proportional_attention=True)))
