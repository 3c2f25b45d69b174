# VideoMAE ViT-B on Kinetics-400 with light NEPAM at the input (the 10% most
# uniform 1x2x2 windows merged: 1568 -> 1451 tokens, the sweep's first stage
# of its combined methods) and JMP in every block from 1 to 10 (-> 424):
# about half the dense FLOPs.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.1),
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(168, 149, 131, 116, 103, 91, 80, 71, 63, 55)))))
