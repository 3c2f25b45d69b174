# VideoMAE V2 ViT-B on Kinetics-400 with ToMe as configs/videomae_tome.py sets
# it for ViT-B, at the same 0.60 of the dense FLOPs: each of the 12 blocks
# merges r=98 tokens by bipartite soft matching of its keys (1568 -> 490 tokens
# in the last block), with proportional attention.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(type='ToMe', r=98), proportional_attention=True)))
