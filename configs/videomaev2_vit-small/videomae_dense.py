# VideoMAE V2 ViT-S (distilled from ViT-g, K710 pre-trained) on Kinetics-400
# through mmtokred's backbone, no reduction.
_base_ = 'mmaction::recognition/videomaev2/vit-small-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400.py'  # noqa: E501

custom_imports = dict(imports=['mmtokred.plugin'], allow_failed_imports=False)

model = dict(backbone=dict(type='TokenReductionVisionTransformer'))

# Bad data stops the test naming the file and line; skip_unreadable=True
# leaves broken videos out and counts them (docs/data.md).
test_dataloader = dict(
    dataset=dict(type='CheckedVideoDataset', num_classes=400))
custom_hooks = [dict(type='DataCheckHook'), dict(type='AttentionKernelHook')]

load_from = 'https://download.openmmlab.com/mmaction/v1.0/recognition/videomaev2/vit-small-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400/vit-small-p16_videomaev2-vit-g-dist-k710-pre_16x4x1_kinetics-400_20230510-25c748fd.pth'  # noqa: E501
