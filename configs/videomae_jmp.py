# VideoMAE ViT-B on Kinetics-400 with JMP: in blocks 2, 5 and 8 the 500, 400
# and 300 least important tokens (1568 -> 368) are merged into their most
# similar kept token (key cosine similarity >= 0.5) or pruned. About half the
# FLOPs.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(2, 5, 8),
                r=(500, 400, 300),
                threshold=0.5,
                importance='pooled_query'))))
