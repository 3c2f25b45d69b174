# The proxy model with NEPAM at its default (57% of the 2x2x2 windows merged:
# 256 -> 130 tokens), for tests and pictures on the generated actions.
_base_ = './videomae_proxy_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(2, 2, 2), ratio=0.57))))
