# VideoMAE ViT-B on Kinetics-400 through mmtokred's backbone, no reduction:
# the reference that every reduced config is compared with.
_base_ = 'mmaction::recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400.py'  # noqa: E501

custom_imports = dict(imports=['mmtokred.plugin'], allow_failed_imports=False)

model = dict(backbone=dict(type='TokenReductionVisionTransformer'))

# Bad data stops the test naming the file and line; skip_unreadable=True
# leaves broken videos out and counts them (docs/data.md). On a GPU,
# AttentionKernelHook times the attention kernels the model can run (key
# bias, packed batches) before the loops and runs the fastest
# (docs/packed.md).
test_dataloader = dict(
    dataset=dict(type='CheckedVideoDataset', num_classes=400))
custom_hooks = [dict(type='DataCheckHook'), dict(type='AttentionKernelHook')]

load_from = 'https://download.openmmlab.com/mmaction/v1.0/recognition/videomae/vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-860a3cd3.pth'  # noqa: E501
