# VideoMAE ViT-B on Kinetics-400 with JMP at about half the dense FLOPs: in
# every block from 1 to 10 the 215, 186, ... 57 most redundant or least
# important tokens (1568 -> 358) leave, merged into their ToMe partner when
# similar, pruned otherwise (docs/adaptive_methods.md).
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='JMP',
                blocks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
                r=(215, 186, 160, 138, 119, 103, 89, 77, 66, 57)))))
