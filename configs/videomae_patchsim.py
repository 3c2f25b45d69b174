# VideoMAE ViT-B on Kinetics-400 with patch-similarity pruning: right after
# the patch projection the 40% most redundant patches are pruned (1568 ->
# 941), each only if a less redundant patch at least 0.5 similar stays.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='PatchSimilarityPruning', ratio=0.4,
                       threshold=0.5))))
