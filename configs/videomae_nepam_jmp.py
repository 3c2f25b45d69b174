# VideoMAE ViT-B on Kinetics-400 with NEPAM at its default at the input
# (1568 -> 1451 tokens) and JMP in every block from 1 to 10 (-> 424): about
# half the dense FLOPs.
_base_ = './videomae_nepam.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(168, 149, 131, 116, 103, 91, 80, 71, 63, 55)))))
