# VideoMAE ViT-L on Kinetics-400 with NEPAM at its default (as
# configs/videomae_nepam.py): the most uniform 10% of the 1x2x2 windows of
# tubelets become one token each (1568 -> 1451 tokens).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.1))))
