# The proxy model with light NEPAM (10% of the 1x2x2 windows merged: 256 ->
# 238 tokens; the first stage of the sweep's combined methods), for tests
# and pictures on the generated actions.
_base_ = './videomae_proxy_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.1))))
