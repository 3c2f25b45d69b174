# A small VideoMAE-style ViT trained from scratch on the generated action
# clips of tools/make_action_dataset.py (real photographs, hand-held camera,
# distractors): the proxy on which accuracy kept by token reduction is
# measured where Kinetics cannot be reached. 8 blocks, so that in-block
# schedules (blocks 2, 4, 6 as PPT's 3, 6, 9 of 12) mean something; 64 wide
# to keep one training near 30 minutes on 2 CPU cores. 8x64x64 clips (every
# 4th of 32 frames), 2x8x8 tubelets: a (4, 8, 8) grid of 256 tokens.
_base_ = '../videomae_dense.py'

data_root = 'data/actions'
num_classes = 10

model = dict(
    backbone=dict(
        img_size=64,
        patch_size=8,
        embed_dims=64,
        depth=8,
        num_heads=4,
        num_frames=8,
        drop_path_rate=0.1),
    cls_head=dict(num_classes=num_classes, in_channels=64))

# Frames are generated at 64x64; no flip: left and right are classes.
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=8, frame_interval=4, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='DecordInit'),
    dict(
        type='SampleFrames',
        clip_len=8,
        frame_interval=4,
        num_clips=1,
        test_mode=True),
    dict(type='DecordDecode'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]


train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CheckedVideoDataset',
        num_classes=num_classes,
        ann_file=f'{data_root}/train.txt',
        data_prefix=dict(video=f'{data_root}/videos'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CheckedVideoDataset',
        num_classes=num_classes,
        ann_file=f'{data_root}/val.txt',
        data_prefix=dict(video=f'{data_root}/videos'),
        pipeline=test_pipeline,
        test_mode=True))
test_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        num_classes=num_classes,
        ann_file=f'{data_root}/test.txt',
        data_prefix=dict(video=f'{data_root}/videos'),
        pipeline=test_pipeline))
val_evaluator = dict(type='AccMetric')
test_evaluator = dict(type='AccMetric')

max_epochs = 15
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=3)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=5, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, eta_min=1e-5,
         by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(
    checkpoint=dict(interval=3, max_keep_ckpts=1, save_best='acc/top1'),
    logger=dict(interval=20))
auto_scale_lr = dict(enable=False, base_batch_size=16)
load_from = None
