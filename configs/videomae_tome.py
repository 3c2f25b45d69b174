# VideoMAE ViT-B on Kinetics-400 with ToMe: every block merges r=98 tokens by
# bipartite soft matching of its keys (1568 -> 490 tokens in the last block,
# 0.60 of the dense FLOPs), with proportional attention: -0.4 / +0.2 top-1
# on the pretrained proxy's two models; at half the FLOPs (r=120) -0.5 / -0.5,
# at the limit of the 0.5 target (docs/proxy_results.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(type='ToMe', r=98), proportional_attention=True)))
