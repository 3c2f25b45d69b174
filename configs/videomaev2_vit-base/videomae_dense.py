# VideoMAE V2 ViT-B (distilled from ViT-g, K710 pre-trained) on Kinetics-400
# through mmtokred's backbone, no reduction.
_base_ = [
    'mmaction::recognition/videomaev2/vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400.py',  # noqa: E501
    '../_base_/mmtokred_videomae.py'
]

model = dict(backbone=dict(type='TokenReductionVisionTransformer'))
# Bad data raises naming the file and line (docs/data.md).
test_dataloader = dict(
    dataset=dict(type='CheckedVideoDataset', num_classes=400))

load_from = 'https://download.openmmlab.com/mmaction/v1.0/recognition/videomaev2/vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400/vit-base-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400_20230510-3e7f93b2.pth'  # noqa: E501
