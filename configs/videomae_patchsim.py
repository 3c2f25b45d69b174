# VideoMAE ViT-B on Kinetics-400 with patch-similarity pruning in the blocks
# at 0.60 of the dense FLOPs: blocks 1-10 remove the 184, 163, ... 60 most
# redundant tokens (1568 -> 448), each only if a less redundant token at least
# 0.5 similar stays, and merge each into its most similar kept token, with
# proportional attention. It does both: 1.63x dense on CPU, -0.4 / -0.2 top-1
# on the pretrained proxy (docs/proxy.md#the-defaults-from-it).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='SimilarityPruning',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(184, 163, 143, 127, 112, 99, 87, 77, 68, 60)),
            proportional_attention=True)))
