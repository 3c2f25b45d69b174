"""VideoMAE's masked-autoencoder pretraining
(mmtokred/models/mae_pretraining.py) and the fine-tune config that loads its
encoder."""
import math
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_tool, split_options
from mmaction.registry import MODELS
from mmengine.config import Config

import mmtokred.plugin  # noqa: F401
from mmtokred.models import mae_pretraining
from mmtokred.models.mae_pretraining import (check_mask_ratio, pixel_targets,
                                             tube_mask)

PROXY = ROOT / 'configs' / 'proxy'
TINY = dict(type='TokenReductionVisionTransformer', img_size=16,
            patch_size=4, embed_dims=16, depth=2, num_heads=2, num_frames=4,
            qkv_bias=True, norm_cfg=dict(type='LN', eps=1e-6))
PREPROCESSOR = dict(type='ActionDataPreprocessor',
                    mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], format_shape='NCTHW')


def tiny_pretrainer(**kwargs):
    return MODELS.build(dict(
        type='VideoMAEPretrainer', backbone=TINY,
        decoder=dict(embed_dims=8, depth=1, num_heads=2),
        data_preprocessor=PREPROCESSOR, **kwargs))


def test_tube_masks_hide_the_same_patches_of_every_slice():
    # masking_generator.py, TubeMaskingGenerator: int(ratio * H' * W')
    # positions of a frame, shuffled, tiled over the T' slices.
    mask = tube_mask(64, (3, 4, 5), 0.9)
    assert mask.shape == (64, 60) and mask.dtype == torch.bool
    slices = mask.reshape(64, 3, 20)
    assert (slices.sum(-1) == int(0.9 * 20)).all()
    assert (slices == slices[:, :1]).all()
    assert not (slices[:, 0] == slices[0, 0]).all()  # each clip its own
    assert tube_mask(2, (2, 2, 2), 0.).sum() == 0
    for ratio in (1., -0.1):
        with pytest.raises(ValueError, match='mask_ratio must be in'):
            tube_mask(1, (2, 2, 2), ratio)


def reference_targets(videos, tubelet, patch, normalise):
    # engine_for_pretraining.py, train_one_epoch:
    #   rearrange(unnorm_videos,
    #             'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c')
    #   (x - x.mean(dim=-2)) / (x.var(dim=-2, unbiased=True).sqrt() + 1e-6)
    #   rearrange(videos_norm, 'b n p c -> b n (p c)')
    b, c, t, h, w = videos.shape
    tokens = []
    for ti in range(t // tubelet):
        for hi in range(h // patch):
            for wi in range(w // patch):
                pixels = [videos[:, :, ti * tubelet + p0, hi * patch + p1,
                                 wi * patch + p2]
                          for p0 in range(tubelet) for p1 in range(patch)
                          for p2 in range(patch)]
                tokens.append(torch.stack(pixels, 1))  # (b, p, c)
    x = torch.stack(tokens, 1)
    if normalise:
        x = (x - x.mean(-2, keepdim=True)) / (
            x.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


@pytest.mark.parametrize('normalise', [True, False])
def test_pixel_targets_are_the_official_ones(normalise):
    videos = torch.rand(2, 3, 4, 6, 9, dtype=torch.float64)
    assert torch.allclose(
        pixel_targets(videos, 2, 3, normalise),
        reference_targets(videos, 2, 3, normalise), atol=1e-12)


def test_the_loss_is_on_the_hidden_patches_and_falls():
    torch.manual_seed(0)
    model = tiny_pretrainer()
    model.init_weights()
    # Each clip one random tubelet tiled over its grid: a hidden patch is
    # what the visible ones show, where noise would leave only the mean.
    clips = (torch.rand(4, 1, 3, 2, 4, 4) * 255).repeat(1, 1, 1, 2, 4, 4)
    inputs = model.data_preprocessor({'inputs': list(clips),
                                      'data_samples': None},
                                     training=True)['inputs']
    predicted, target, mask = model(inputs, mode='tensor')
    hidden = int(0.9 * 16)
    assert mask.shape == (4, 32) and (mask.sum(1) == 2 * hidden).all()
    assert predicted.shape == target.shape == (4, 2 * hidden, 2 * 4 * 4 * 3)
    # The targets are the pixels of the clips, back from the normalisation.
    full = pixel_targets(clips.flatten(0, 1) / 255., 2, 4)
    assert torch.allclose(target, full[mask].reshape(4, -1, 96), atol=1e-4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = model(inputs, mode='loss')['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Below 0.96, the error of predicting each target's mean (zero).
    assert sum(losses[-5:]) / 5 < 0.6 < sum(losses[:5]) / 5
    # The same mask for both calls: the loss, and its share of what
    # predicting each clip's mean hidden patch leaves.
    torch.manual_seed(1)
    predicted, target, _ = model(inputs, mode='tensor')
    torch.manual_seed(1)
    outputs = model(inputs, mode='loss')
    assert torch.allclose(outputs['loss'],
                          (predicted - target).square().mean())
    spread = (target - target.mean(1, keepdim=True)).square().mean()
    # Every hidden patch of a tiled clip is alike: spread ~1e-14, floored.
    assert spread < mae_pretraining.RESIDUAL_SPREAD_FLOOR
    assert torch.allclose(
        outputs['residual_share'],
        outputs['loss'] / mae_pretraining.RESIDUAL_SPREAD_FLOOR)
    with pytest.raises(ValueError, match="mode must be 'loss' or 'tensor'"):
        model(inputs, mode='predict')


def test_bad_pretraining_settings_are_named():
    with pytest.raises(ValueError, match='use_mean_pooling must be False'):
        MODELS.build(dict(type='VideoMAEPretrainer',
                          backbone=dict(TINY, use_mean_pooling=True)))
    with pytest.raises(ValueError, match='token_reduction must be None'):
        MODELS.build(dict(type='VideoMAEPretrainer', backbone=dict(
            TINY, token_reduction=dict(input=dict(type='NEPAM',
                                                  ratio=0.5)))))
    with pytest.raises(ValueError, match='mask_ratio must be in'):
        tiny_pretrainer(mask_ratio=1.)
    with pytest.raises(ValueError, match='clips of the configured size'):
        tiny_pretrainer()(torch.zeros(1, 3, 4, 32, 32), mode='loss')


# TINY's grid (2, 4, 4): 16 patches a frame, int(ratio * 16) of them hidden.
TINY_RATIOS = r'mask_ratio must be in \[0\.0625, 1\) for the token grid ' \
    r'\(2, 4, 4\), so that int\(mask_ratio \* 16\) hides at least 1 and ' \
    r'at most 15 of the 16 patches of each frame, got '


@pytest.mark.parametrize('ratio', [0, 0., 0.01, 0.0624, 1., 1.5])
def test_a_mask_ratio_hiding_no_patch_or_every_patch_fails_at_build(ratio):
    # 0 and 0.01 hide no patch: the loss had no target (F.mse_loss raised
    # at the first batch); 1 and above hide every patch.
    with pytest.raises(ValueError, match=TINY_RATIOS + repr(ratio) + '$'):
        tiny_pretrainer(mask_ratio=ratio)


@pytest.mark.parametrize('ratio, hidden', [(0.0625, 1), (0.99, 15)])
def test_the_ends_of_the_mask_ratio_range_train(ratio, hidden):
    model = tiny_pretrainer(mask_ratio=ratio)
    _, _, mask = model(torch.randn(2, 3, 4, 16, 16), mode='tensor')
    assert (mask.sum(1) == 2 * hidden).all()
    assert torch.isfinite(model(torch.randn(2, 3, 4, 16, 16),
                                mode='loss')['loss'])


def test_the_least_mask_ratio_is_exact_in_floats():
    # 1 / 49 * 49 rounds below 1: the bound is the next float up.
    with pytest.raises(ValueError) as error:
        check_mask_ratio(0., (1, 7, 7))
    low = float(str(error.value).split('[')[1].split(',')[0])
    assert low > 1 / 49 and int(low * 49) == 1
    check_mask_ratio(low, (1, 7, 7))
    with pytest.raises(ValueError, match='mask_ratio must be in'):
        check_mask_ratio(math.nextafter(low, 0), (1, 7, 7))
    with pytest.raises(ValueError, match='needs at least 2 patches per '
                       'frame'):
        check_mask_ratio(0.5, (4, 1, 1))


@pytest.mark.parametrize('ratio, got', [
    ('0.9', "'0.9' (a str)"), (None, 'None (a NoneType)'),
    (True, 'True (a bool)'), (False, 'False (a bool)'),
    (float('nan'), 'nan (a float)')])
def test_a_mask_ratio_that_is_no_number_is_named(ratio, got):
    with pytest.raises(ValueError, match=TINY_RATIOS + re.escape(got) + '$'):
        tiny_pretrainer(mask_ratio=ratio)
    with pytest.raises(ValueError, match=r'mask_ratio must be in \[0, 1\) '
                       r'\(a number\), got '):
        tube_mask(1, (2, 2, 2), ratio)


def test_heads_that_do_not_divide_the_width_fail_at_build():
    # Stock Attention built with 32 // 3 channels a head; the first forward
    # failed in the qkv reshape.
    with pytest.raises(ValueError, match=re.escape(
            'decoder.num_heads must divide decoder.embed_dims=32 (one of '
            '[1, 2, 4, 8, 16, 32]), got decoder.num_heads=3')):
        MODELS.build(dict(type='VideoMAEPretrainer', backbone=TINY,
                          decoder=dict(embed_dims=32, depth=1, num_heads=3)))
    for heads in (0, 2.0, True):
        with pytest.raises(ValueError, match=re.escape(
                f'decoder.num_heads must be an integer in [1, inf], got '
                f'{heads!r}')):
            MODELS.build(dict(type='VideoMAEPretrainer', backbone=TINY,
                              decoder=dict(embed_dims=32, num_heads=heads)))
    # The encoder: the backbone's own build check, before any block.
    with pytest.raises(ValueError, match=re.escape(
            'num_heads must divide embed_dims=16 (one of [1, 2, 4, 8, 16]), '
            'got num_heads=3')):
        MODELS.build(dict(type='VideoMAEPretrainer',
                          backbone=dict(TINY, num_heads=3)))
    with pytest.raises(ValueError, match='num_heads must be a positive '
                       'integer, got True'):
        MODELS.build(dict(TINY, num_heads=True))


@pytest.mark.parametrize('norm_pixels', [True, False])
def test_residual_share_on_constant_clips_is_finite(norm_pixels):
    # Every target equals its clip's mean: the spread is 0 (normalised:
    # residual_share was inf) or rounding's ~1e-14 (pixels: ~1e14).
    model = tiny_pretrainer(norm_pixels=norm_pixels)
    clips = torch.full((2, 1, 3, 4, 16, 16), 77.)
    inputs = model.data_preprocessor({'inputs': list(clips),
                                      'data_samples': None},
                                     training=True)['inputs']
    torch.manual_seed(1)
    predicted, target, _ = model(inputs, mode='tensor')
    torch.manual_seed(1)
    outputs = model(inputs, mode='loss')
    spread = (target - target.mean(1, keepdim=True)).square().mean()
    assert spread < mae_pretraining.RESIDUAL_SPREAD_FLOOR
    assert torch.equal(outputs['loss'], F.mse_loss(predicted, target))
    assert torch.equal(
        outputs['residual_share'],
        outputs['loss'].detach() / mae_pretraining.RESIDUAL_SPREAD_FLOOR)
    assert torch.isfinite(outputs['residual_share'])


def test_residual_share_of_varied_clips_is_the_loss_over_the_spread():
    model = tiny_pretrainer(norm_pixels=False)
    inputs = torch.randn(2, 3, 4, 16, 16)
    torch.manual_seed(1)
    predicted, target, _ = model(inputs, mode='tensor')
    torch.manual_seed(1)
    outputs = model(inputs, mode='loss')
    spread = (target - target.mean(1, keepdim=True)).square().mean()
    assert spread > mae_pretraining.RESIDUAL_SPREAD_FLOOR
    assert torch.equal(outputs['residual_share'],
                       outputs['loss'].detach() / spread)


def test_the_fine_tune_config_loads_the_pretrained_encoder(tmp_path):
    pretrain = Config.fromfile(PROXY / 'videomae_proxy_pretrain.py')
    assert pretrain.model.mask_ratio == 0.9
    assert pretrain.model.norm_pixels is False  # why: the config
    pretrainer = MODELS.build(pretrain.model)
    pretrainer.init_weights()
    checkpoint = tmp_path / 'epoch_20.pth'
    torch.save({'state_dict': pretrainer.state_dict(), 'meta': {}},
               checkpoint)
    finetune = Config.fromfile(PROXY / 'videomae_proxy_finetune.py')
    finetune.model.backbone.init_cfg.checkpoint = str(checkpoint)
    model = MODELS.build(finetune.model)
    model.init_weights()
    encoder = pretrainer.backbone.state_dict()
    loaded = model.backbone.state_dict()
    # Every weight but the pretraining encoder's final norm; fc_norm new.
    assert set(encoder) - set(loaded) == {'norm.weight', 'norm.bias'}
    assert set(loaded) - set(encoder) == {'fc_norm.weight', 'fc_norm.bias'}
    for key in set(encoder) & set(loaded):
        assert torch.equal(encoder[key], loaded[key]), key


@pytest.mark.slow
def test_pretrain_then_fine_tune_through_the_train_tool(tmp_path):
    from mmtokred.data import write_action_dataset
    paths = write_action_dataset(str(tmp_path / 'data'),
                                 dict(train=1, val=1, test=1))
    run_tool([
        sys.executable, 'tools/train.py',
        str(PROXY / 'videomae_proxy_pretrain.py'), '--work-dir',
        str(tmp_path / 'pretrain'), '--cfg-options', 'train_cfg.max_epochs=1',
        *split_options(paths, ('train', ))
    ])
    checkpoint = tmp_path / 'pretrain' / 'epoch_1.pth'
    result = run_tool([
        sys.executable, 'tools/train.py',
        str(PROXY / 'videomae_proxy_finetune.py'), '--work-dir',
        str(tmp_path / 'finetune'), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        f'model.backbone.init_cfg.checkpoint={checkpoint}',
        *split_options(paths, ('train', 'val'))
    ])
    assert (tmp_path / 'finetune' / 'epoch_1.pth').exists()
    assert 'acc/top1' in result.stdout + result.stderr
