# VideoMAE ViT-B on Kinetics-400 with patch-similarity pruning at about half
# the dense FLOPs, progressively: in every block from 1 to 10 the 215, 186,
# ... 57 most redundant tokens (1568 -> 358) leave, each only if a less
# redundant token at least 0.5 similar stays, merged into its most similar
# kept token. Pruning at the input instead (PatchSimilarityPruning) is the
# fastest form but lost far more top-1 at half the FLOPs on the proxy
# (docs/adaptive_methods.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='SimilarityPruning',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(215, 186, 160, 138, 119, 103, 89, 77, 66, 57)))))
