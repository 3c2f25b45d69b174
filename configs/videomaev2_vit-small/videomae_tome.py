# VideoMAE V2 ViT-S on Kinetics-400 with ToMe: each of the 12 blocks merges r=120
# tokens by bipartite soft matching of its keys, at a FLOPs budget comparable
# to videomae_nepam.py (about half the FLOPs). No proportional attention (off
# for MAE-family models used off the shelf).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(token_reduction=dict(blocks=dict(type='ToMe', r=120))))
