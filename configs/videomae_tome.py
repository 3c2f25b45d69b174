# VideoMAE ViT-B on Kinetics-400 with ToMe: every block merges r=120 tokens
# by bipartite soft matching of its keys (1568 -> 248 tokens, about half the
# FLOPs), with proportional attention: on the calibrated, MAE-pretrained
# proxy it kept ToMe at half the FLOPs within 0.5 top-1 of dense on both
# trained models, against 3.8 to 10.8 points lost without it
# (docs/proxy.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(type='ToMe', r=120), proportional_attention=True)))
