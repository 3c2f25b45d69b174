# VideoMAE ViT-B on Kinetics-400 with NEPAM at the input (the 10% most
# uniform 1x2x2 windows: 1568 -> 1451 tokens) and JMP in blocks 1-10 (->
# 424): 0.50 of the dense FLOPs, 1.98x dense on CPU (docs/benchmark.md).
# Unmeasured on the pretrained proxy, so not a recommended default (JMP alone
# at half the FLOPs lost -1.4 / -2.5 there; docs/proxy_results.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.1),
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(168, 149, 131, 116, 103, 91, 80, 71, 63, 55)))))
