# VideoMAE ViT-B on Kinetics-400 with NEPAM at half the dense FLOPs: before
# the first block the most uniform 60% of the 1x2x2 windows of tubelets
# become one token each (1568 -> 863 tokens), with proportional attention.
# The best half-FLOPs NEPAM on the pretrained proxy, -0.9 / -0.6 top-1, so it
# misses the 0.5 target: videomae_nepam.py meets it at 0.70 of the FLOPs
# (docs/proxy.md#half-the-flops-without-training-every-method-both-models).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.6),
            proportional_attention=True)))
