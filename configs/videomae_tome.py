# VideoMAE ViT-B on Kinetics-400 with ToMe: every block merges r=120 tokens
# by bipartite soft matching of its keys (1568 -> 248 tokens), at a FLOPs
# budget comparable to configs/videomae_nepam.py. No proportional attention
# (off for MAE-family models used off the shelf).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(token_reduction=dict(blocks=dict(type='ToMe', r=120))))
