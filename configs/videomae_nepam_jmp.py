# VideoMAE ViT-B on Kinetics-400 with NEPAM at the input (1568 -> 784 tokens)
# and JMP in blocks 3 and 6 (784 -> 634 -> 534).
_base_ = './videomae_nepam.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(3, 6),
                r=(150, 100),
                threshold=0.5,
                importance='pooled_query'))))
