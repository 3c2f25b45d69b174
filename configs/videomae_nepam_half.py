# VideoMAE ViT-B on Kinetics-400 with NEPAM at about half the FLOPs (the
# default before the realistic proxy): before the first block, the most
# uniform 2x2x2 windows of tubelets (57% of the windows) become one token
# each, which halves the tokens (1568 -> 784) of every block. On the proxy it
# changes about one prediction in twenty; videomae_nepam.py keeps 98%.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            input=dict(type='NEPAM', window=(2, 2, 2), ratio=0.57))))
