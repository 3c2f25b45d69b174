# configs/tsn_timm_vit-base_tome.py with NEPAM instead of ToMe: before the
# first block, the 39 most uniform of the 98 1x2 windows of patches (the
# ratio of NEPAM's image setting, l1 distance) are each embedded as one
# token (197 -> 158 tokens in every block); no block reduction.
_base_ = './tsn_timm_vit-base_tome.py'

model = dict(
    backbone=dict(token_reduction=dict(
        _delete_=True,
        input=dict(type='NEPAM', window=(1, 2), ratio=39 / 98,
                   distance='l1', keep=1))))
