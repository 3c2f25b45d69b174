# TSN (8 segments, Kinetics-400) with a frame-level timm ViT-B/16 at 224
# whose blocks merge tokens with ToMe (r=8 per block: 197 -> 101 tokens),
# with proportional attention, as ToMe runs off-the-shelf ViTs. Each frame
# goes through the ViT on its own; TSNHead averages the segments. Needs the
# timm environment (README, Tests): elsewhere building the backbone fails
# naming the extra to install. The schedule and data are MMAction2's TSN
# R-50 config's.
_base_ = ('mmaction::recognition/tsn/'
          'tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb.py')

custom_imports = dict(imports=['mmtokred.plugin'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmTokenReductionViT',
        model_name='vit_base_patch16_224',
        # Nothing downloaded by default: timm's ImageNet weights (to train
        # from) come from the Hugging Face hub only when asked for,
        # --cfg-options model.backbone.pretrained=True (or from a local
        # file: model.backbone.checkpoint=FILE); tools/test.py loads every
        # weight from the recognizer's checkpoint it is given.
        pretrained=False,
        token_reduction=dict(
            blocks=dict(type='ToMe', r=8), proportional_attention=True)),
    cls_head=dict(in_channels=768),
    # vit_base_patch16_224's normalisation (mean = std = 0.5), not ResNet's.
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5],
                           std=[127.5, 127.5, 127.5]))

file_client_args = dict(io_backend='disk')
# TSN's test protocol (25 frames, ten 224x224 crops): the ViT's input size.
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=25,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='TenCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs')
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
