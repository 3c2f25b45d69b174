# A tiny VideoMAE-style ViT on the generated clips of tools/make_videos.py:
# the embedded default of the demo and the tests. Inherits the official
# VideoMAE ViT-B config and changes only what differs.
_base_ = '../videomae_dense.py'

data_root = 'work_dirs/demo/data'

model = dict(
    backbone=dict(
        img_size=64, embed_dims=96, depth=4, num_heads=4, num_frames=8),
    cls_head=dict(num_classes=4, in_channels=96))

test_pipeline = [
    dict(type='DecordInit'),
    dict(
        type='SampleFrames',
        clip_len=8,
        frame_interval=2,
        num_clips=2,
        test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 64)),
    dict(type='ThreeCrop', crop_size=64),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        num_classes=4,
        ann_file=data_root + '/annotations.txt',
        data_prefix=dict(video=data_root + '/videos'),
        pipeline=test_pipeline))

load_from = None
