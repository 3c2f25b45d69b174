# VideoMAE ViT-B on Kinetics-400 with patch-similarity pruning at 0.6 of the
# dense FLOPs, progressively: in every block from 1 to 10 the 184, 163, ...
# 60 most redundant tokens (1568 -> 448) leave, each only if a less
# redundant token at least 0.5 similar stays, merged into its most similar
# kept token; proportional attention on. The largest reduction the
# calibrated, MAE-pretrained proxy kept within 0.5 top-1 of dense on both
# trained models (-0.4 / -0.2; at half the FLOPs -1.7 / -0.5, and without
# proportional attention -15.0 / -7.8; docs/proxy.md). Pruning at the input
# instead (PatchSimilarityPruning) is the fastest form but lost more top-1
# at 0.6 on the proxy (-0.6 / -0.8; docs/proxy_results.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='SimilarityPruning',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(184, 163, 143, 127, 112, 99, 87, 77, 68, 60)),
            proportional_attention=True)))
