# The tiny demo model with NEPAM: half of the 2x2x2 windows of tubelets
# become one token each (64 -> 36 tokens).
_base_ = './videomae_tiny_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(2, 2, 2), ratio=0.5))))
