# VideoMAE ViT-B on Kinetics-400 with PPT at about half the dense FLOPs: in
# every block from 1 to 10 each clip pools (ToMe) or prunes 215, 186, ... 57
# tokens (1568 -> 358), whichever the spread of its importance calls for;
# pruned tokens are merged into their most similar kept token, so the pooled
# mean keeps them. Many small steps kept more top-1 on the proxy than the
# paper's three at blocks 3, 6, 9 (docs/adaptive_methods.md). Proportional
# attention on, as the calibrated, MAE-pretrained proxy decides; no PPT
# budget down to 0.9 of the FLOPs stayed within 0.5 top-1 of dense on both
# of its models (docs/proxy.md), so the budget is the earlier one.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='PPT',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(215, 186, 160, 138, 119, 103, 89, 77, 66, 57)),
            proportional_attention=True)))
