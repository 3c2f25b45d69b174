# VideoMAE ViT-B on Kinetics-400 through mmtokred's backbone, no reduction:
# the reference that every reduced config is compared with.
_base_ = [
    'mmaction::recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py',  # noqa: E501
    './_base_/mmtokred_videomae.py'
]

model = dict(backbone=dict(type='TokenReductionVisionTransformer'))
# Bad data raises naming the file and line (docs/data.md).
test_dataloader = dict(
    dataset=dict(type='CheckedVideoDataset', num_classes=400))

load_from = 'https://download.openmmlab.com/mmaction/v1.0/recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-860a3cd3.pth'  # noqa: E501
