# VideoMAE ViT-B on Kinetics-400 with PPT: in blocks 2, 5 and 8 each clip
# pools (ToMe) or prunes 500, 400 and 300 tokens (1568 -> 368), whichever the
# spread of its attention calls for. About half the FLOPs.
_base_ = './videomae_dense.py'

model = dict(
    backbone=dict(
        token_reduction=dict(
            blocks=dict(
                type='PPT',
                blocks=(2, 5, 8),
                r=(500, 400, 300),
                threshold=2.69,
                importance='pooled_query'))))
