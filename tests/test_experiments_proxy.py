"""The accuracy proxy: generated actions, training, sweep, token pictures."""
import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_tool, split_options
from mmaction.registry import DATASETS

from mmengine.config import Config
from mmengine.dataset import Compose

from mmtokred.data import (ACTIONS, MIN_COVER, TokenGrid, render_clip,
                           render_clip_with_mask, tubelet_mask,
                           write_action_dataset)
from mmtokred.ops import neighbour_merge
from mmtokred.visualization import (annotate, caption, overlay,
                                    stage_labels, token_map, token_summary)

PROXY = ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'


@pytest.fixture(scope='module')
def actions(tmp_path_factory):
    root = tmp_path_factory.mktemp('actions')
    paths = write_action_dataset(str(root), dict(train=2, val=1, test=1))
    return root, paths


def test_generator_is_deterministic_and_readable(actions, tmp_path):
    root, paths = actions
    again = write_action_dataset(str(tmp_path), dict(train=2, val=1, test=1))
    for split in ('train', 'val', 'test'):
        assert paths[split].read_text() == again[split].read_text()
    name = paths['test'].read_text().split()[0]
    import decord
    a = decord.VideoReader(str(paths['videos'] / name))
    b = decord.VideoReader(str(again['videos'] / name))
    assert len(a) == 32 and (a[7].asnumpy() == b[7].asnumpy()).all()
    dataset = DATASETS.build(
        dict(type='VideoDataset', ann_file=str(paths['train']),
             data_prefix=dict(video=str(paths['videos'])), pipeline=[]))
    assert len(dataset) == 2 * len(ACTIONS)
    assert {dataset[i]['label'] for i in range(len(dataset))} == set(
        range(len(ACTIONS)))


def test_test_split_does_not_depend_on_the_train_split(tmp_path):
    small = write_action_dataset(str(tmp_path / 'a'),
                                 dict(train=1, val=1, test=1))
    large = write_action_dataset(str(tmp_path / 'b'),
                                 dict(train=3, val=1, test=1))
    assert small['test'].read_text() == large['test'].read_text()


def _centre(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    return np.array([columns.mean(), rows.mean()])


def test_motion_defines_the_class():
    # 'moves right' shifts the actor's centre right, 'moves fast' twice as
    # far in one of the four directions, whatever the camera does.
    moved = {}
    for label in (0, 4):
        _, masks = render_clip_with_mask(np.random.default_rng(3), label, 16,
                                         64)
        moved[label] = _centre(masks[-1]) - _centre(masks[0])
    assert moved[0][0] > 5 and abs(moved[0][1]) < 2
    assert 1.6 < np.abs(moved[4]).max() / moved[0][0] < 2.4
    with pytest.raises(ValueError, match='label'):
        render_clip(np.random.default_rng(0), len(ACTIONS), 8, 32)


def test_backgrounds_are_textured_and_the_camera_moves():
    from mmtokred.data import HAND_HELD
    rng = np.random.default_rng(0)
    for label in range(len(ACTIONS)):
        frames, masks = render_clip_with_mask(rng, label, 32, 64, HAND_HELD)
        background = ~masks.any(0)
        # Real photographs: texture everywhere, not a flat colour.
        assert frames[0][background].std(0).mean() > 8, label
        # A hand-held camera: no two frames of the background are equal.
        assert (frames[0] != frames[-1])[background].any()


def test_a_camera_on_a_tripod_rests_and_bad_cameras_are_named():
    from mmtokred.data import Camera
    from mmtokred.data.camera import background_frames
    # The default camera: 70% of the clips from a tripod, the rest moving.
    rests = [np.array_equal(clip[0], clip[-1]) for clip in (
        background_frames(np.random.default_rng(seed), 'astronaut', 8, 64)
        for seed in range(40))]
    assert 0.5 < np.mean(rests) < 0.9
    still = background_frames(np.random.default_rng(0), 'astronaut', 8,
                              64, Camera(still=1.))
    assert all(np.array_equal(still[0], frame) for frame in still)
    moving = background_frames(np.random.default_rng(0), 'astronaut', 8,
                               64, Camera(still=0.))
    assert not np.array_equal(moving[0], moving[-1])
    for field, value in (('still', 1.5), ('shake', -1), ('view_max', 2)):
        with pytest.raises(ValueError, match=f'camera {field} must be in'):
            render_clip_with_mask(np.random.default_rng(0), 0, 8, 64,
                                  Camera(**{field: value}))


def test_the_hand_held_camera_reproduces_the_earlier_clips():
    # tests/data/hand_held_clips.json: the mean of each 16x16 square of each
    # frame of three clips, written by the generator before its camera
    # became a setting (when HAND_HELD was the only camera).
    from mmtokred.data import HAND_HELD, Camera
    pinned = json.loads(
        (ROOT / 'tests' / 'data' / 'hand_held_clips.json').read_text())
    for key, means in pinned.items():
        seed, label = map(int, key.split('-'))
        for camera, same in ((HAND_HELD, True), (Camera(), False)):
            frames, _ = render_clip_with_mask(
                np.random.default_rng(seed), label, 8, 64, camera)
            squares = frames.astype(np.float64).reshape(8, 4, 16, 4, 16,
                                                        3).mean((2, 4, 5))
            assert np.allclose(squares, means, atol=0.05) == same, key


def test_every_actor_stands_out():
    for seed in range(30):
        # 'disappears' between frames 15 and 16: what changes is the actor.
        frames, masks = render_clip_with_mask(np.random.default_rng(seed), 9,
                                              32, 64)
        change = np.abs(frames[16].astype(int) - frames[15]).sum(-1)
        assert change[masks[15]].mean() > 3 * change[~masks[15]].mean() + 30


def test_actor_masks_line_up_with_the_model_grid(actions):
    _, paths = actions
    masks = np.load(paths['test_actor'])
    cfg = Config.fromfile(PROXY)
    backbone = cfg.model.backbone
    grid = (backbone.num_frames // backbone.get('tubelet_size', 2),
            backbone.img_size // backbone.patch_size,
            backbone.img_size // backbone.patch_size)
    assert masks.shape == (len(ACTIONS), *grid) and masks.dtype == bool
    # The frames the config's test pipeline samples are the frames the
    # masks were cut from.
    name = paths['test'].read_text().split()[0]
    pipeline = Compose([t for t in cfg.test_pipeline
                        if t['type'] in ('DecordInit', 'SampleFrames')])
    results = pipeline(dict(filename=str(paths['videos'] / name),
                            start_index=0, modality='RGB'))
    assert results['frame_inds'].tolist() == TokenGrid().frames(32)
    # And they are the masks of the rendered clips, tubelet by tubelet.
    rng = np.random.default_rng([0, 2])  # the test split's generator
    _, pixels = render_clip_with_mask(rng, 0, 32, 64)
    assert np.array_equal(masks[0], tubelet_mask(pixels, TokenGrid()))
    assert TokenGrid().frames(32) == [1, 5, 9, 13, 17, 21, 25, 29]
    cover = pixels[TokenGrid().frames(32)].reshape(4, 2, 8, 8, 8, 8).mean(
        (1, 3, 5))
    assert np.array_equal(masks[0], cover >= MIN_COVER) and masks[0].any()


@pytest.mark.slow
def test_train_then_sweep(actions, tmp_path):
    _, paths = actions
    run_tool([
        sys.executable, 'tools/train.py', str(PROXY), '--work-dir',
        str(tmp_path / 'train'), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', *split_options(paths)
    ])
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    assert checkpoint.exists()
    sweep_dir = tmp_path / 'sweep'
    result = run_tool([
        sys.executable, 'tools/sweep.py', str(PROXY), str(checkpoint),
        str(checkpoint), '--methods', 'nepam', 'ppt', '--flops', '0.7',
        '0.5', '--configs', str(PROXY.with_name('videomae_proxy_nepam.py')),
        '--repeats', '1', '--work-dir', str(sweep_dir),
        '--cfg-options', *split_options(paths)
    ])
    rows = json.loads((sweep_dir / 'sweep.json').read_text())
    # Two models (the same checkpoint twice), dense, two methods at two
    # FLOPs targets each and a config as configured.
    assert len(rows) == 2 * (1 + 2 * 2 + 1)
    assert [r['method'] for r in rows][:3] == ['dense', 'nepam', 'nepam']
    configured = rows[5]
    assert configured['method'] == 'videomae_proxy_nepam'
    assert configured['target'] is None
    assert json.loads(configured['token_reduction'])['input']['ratio'] == 0.1
    for model in (0, 1):
        dense = [r for r in rows if r['model'] == model][0]
        assert dense['agreement'] == 1 and dense['flops_ratio'] == 1
        assert dense['retention'] == 1
    for row in rows[1:5]:
        assert row['flops_ratio'] <= row['target'] + 1e-9
        assert row['flops_ratio'] > row['target'] - 0.1  # least reduction
        assert 0 <= row['top1'] <= 1 and 0 <= row['retention'] <= 1
    assert [r['top1'] for r in rows[:6]] == [r['top1'] for r in rows[6:]]
    ppt = [r for r in rows if r['method'] == 'ppt'][0]
    branches = json.loads(ppt['branches'])
    assert branches['pool'] + branches['prune'] == len(ACTIONS) * 6  # blocks
    assert len(json.loads(ppt['statistic'])) == 3
    assert (sweep_dir / 'sweep.csv').read_text().startswith('model,method')
    assert (sweep_dir / 'sweep.png').stat().st_size > 10000
    assert 'wrote' in result.stdout and 'retained' in result.stdout


def test_token_map_and_overlay_follow_the_source_map():
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv3d(3, 8, (2, 8, 8), (2, 8, 8))
    video = torch.randn(1, 3, 4, 32, 32, generator=generator)
    video[..., :16, :16] = 0.  # one flat 2x2x2 window of tubelets
    _, state = neighbour_merge(video, conv.weight, conv.bias,
                               torch.zeros(1, 32, 8), (2, 2, 2),
                               num_merged=1, track_source=True)
    owners = token_map(state.source[0], (2, 4, 4))
    assert (owners[:, :2, :2] == owners[0, 0, 0]).all()  # merged together
    assert len(np.unique(owners)) == 32 - 7
    frame = np.full((32, 32, 3), 128, np.uint8)
    sizes = np.bincount(owners.ravel())
    drawn = overlay(frame, owners[0], sizes)
    assert (drawn[:16, :16] == drawn[0, 0]).all()  # one colour for the token
    assert not (drawn[0, 0] == 128).all()
    assert (drawn[16:, 16:] == 128).all()  # single tubelets untouched
    pruned = owners[0].copy()
    pruned[3, 3] = -1
    assert (overlay(frame, pruned, sizes)[24:, 24:] < 20).all()


def test_rows_are_labelled_with_what_they_show():
    assert stage_labels([1, 3], 8, 'NEPAM') == [
        'after NEPAM', 'after block 1 (of 0-7)', 'after block 3 (of 0-7)']
    assert stage_labels([3], 4, None) == ['input (no input reduction)',
                                          'after block 3 (of 0-3)']
    # Tokens 0 and 2 hold two tubelets each, one tubelet is held by none.
    owners = np.array([[[0, 0, 1], [2, -1, 2]]])
    assert token_summary(owners) == ('3 tokens, 2 of them merged, 1 tubelet '
                                     'pruned')
    owners[0, 0, 1] = -1
    assert token_summary(owners) == ('3 tokens, 1 of them merged, 2 '
                                     'tubelets pruned')
    assert token_summary(np.arange(4).reshape(1, 2, 2)) == (
        '4 tokens, 0 of them merged')


def test_the_legend_says_what_is_drawn():
    whole = {'after NEPAM': np.arange(4).reshape(1, 2, 2)}
    pruned = dict(whole, after=np.array([[[0, -1], [1, 1]]]))
    texts = [[text for _, text in caption(maps, 'columns: time steps')]
             for maps in (whole, pruned)]
    assert texts[0][0].startswith('tinted: the tubelets of one merged token')
    assert not any('pruned' in text for text in texts[0])
    assert texts[1][2] == 'dark: pruned, held by no token'
    assert texts[0][-1] == texts[1][-1] == 'columns: time steps'
    # Swatches: merged tokens' colours, then the shade of a pruned tubelet.
    swatches = [len(s) for s, _ in caption(pruned, '')]
    assert swatches == [3, 0, 1, 0]
    # Each row gets a head above it, the legend goes below, the width stays.
    image = np.zeros((2 * 40, 300, 3), np.uint8)
    labelled = annotate(image, ['a', 'b'], caption(whole, 'x'), 'row')
    assert labelled.shape[1] == 300 and labelled.shape[0] > 80 + 3 * 18
    assert annotate(image, ['a', 'b'], [], 'column').shape[1] == 300
    with pytest.raises(ValueError, match='by'):
        annotate(image, ['a'], [], 'diagonal')


def test_visualize_tokens_tool(actions, tmp_path):
    _, paths = actions
    video = paths['videos'] / paths['test'].read_text().split()[0]
    result = run_tool([
        sys.executable, 'tools/visualize_tokens.py', str(video),
        str(PROXY.with_name('videomae_proxy_nepam.py')), '--blocks', '1', '3',
        '--out', str(tmp_path / 'tokens'), '--cfg-options',
        'model.backbone.token_reduction.blocks.type=ToMe',
        'model.backbone.token_reduction.blocks.r=16'
    ])
    # NEPAM's default merges 10% of the 64 1x2x2 windows: 256 - 6 x 3.
    assert 'after NEPAM: 238 tokens, 6 of them merged\n' in result.stdout
    # 238 - 2 x 16 by ToMe.
    assert 'after block 1 (of 0-7): 206 tokens' in result.stdout
    assert 'by row: after NEPAM; after block 1 (of 0-7); after block 3 ' \
        '(of 0-7))' in result.stdout
    assert (tmp_path / 'tokens.png').stat().st_size > 1000
    from PIL import Image
    gif = Image.open(tmp_path / 'tokens.gif')
    assert gif.n_frames == 8


@pytest.mark.slow
def test_dist_train_runs_two_processes(actions, tmp_path):
    _, paths = actions
    result = run_tool([
        'bash', 'tools/dist_train.sh', str(PROXY), '2', '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', *split_options(paths)
    ], env={'PORT': '29531'})
    output = result.stdout + result.stderr
    assert 'distributed: 2 processes' in output and 'Epoch(val) [1]' in output
    assert (tmp_path / 'epoch_1.pth').exists()


def test_object_retention_is_exact_on_a_hand_made_clip(tmp_path):
    from mmtokred.data.synthetic_videos import _write_mp4
    from mmtokred.ops import random_importance
    from mmtokred.experiments.clips import Clips, recogniser
    from mmtokred.experiments.evaluation import actor_masks, evaluate

    frames = np.random.default_rng(0).integers(0, 256, (32, 64, 64, 3),
                                               dtype=np.uint8)
    (tmp_path / 'videos').mkdir()
    _write_mp4(tmp_path / 'videos' / 'clip.mp4', frames, 16)
    (tmp_path / 'hand.txt').write_text('clip.mp4 0\n')
    actor = np.zeros((1, 4, 8, 8), bool)
    actor[0, 1, 2:5, 3:6] = True  # 9 tubelets in the second time step
    actor[0, 3, 7, :] = True  # and 8 in the last row of the last one
    np.save(tmp_path / 'hand_actor.npy', actor)
    cfg = Config.fromfile(PROXY)
    cfg.test_dataloader.dataset.ann_file = str(tmp_path / 'hand.txt')
    cfg.test_dataloader.dataset.data_prefix.video = str(tmp_path / 'videos')
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    clips, model = Clips(cfg), recogniser(cfg)
    masks = actor_masks(cfg, clips)
    assert evaluate(model, clips, None, masks)['retention'] == 1
    # Random-score pruning keeps a known set of positions: the 56 of 256
    # with the highest hash of (seed 0 + block 0, position).
    kept = random_importance(torch.zeros(1, 256, 1), 0).topk(56).indices[0]
    held = np.zeros(256, bool)
    held[kept.numpy()] = True
    expected = (held & actor.reshape(-1)).sum() / actor.sum()
    result = evaluate(model, clips, dict(blocks=dict(
        type='TokenPruning', blocks=(0, ), r=200, importance='random',
        keep_mean='drop')), masks)
    assert result['retention'] == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 1


def test_sweep_method_specs():
    from mmtokred.experiments.recipes import Grid, resolve
    grid = Grid(tokens=256, depth=8)
    reduction = resolve("ppt:threshold=1.5,keep_mean='fuse'").make(0.5, grid)
    assert reduction['blocks']['threshold'] == 1.5
    assert reduction['blocks']['keep_mean'] == 'fuse'
    assert reduction['blocks']['blocks'] == [1, 2, 3, 4, 5, 6]
    assert abs(sum(reduction['blocks']['r']) - 128) <= 3  # half the tokens
    assert resolve('ppt_official').make(0.5, grid)['blocks']['blocks'] == [
        2, 4, 6]
    assert resolve('patchsim:threshold=None').make(
        0.3, grid)['input']['threshold'] is None
    combined = resolve('nepam_jmp:threshold=0.2').make(0.5, grid)
    assert combined['input']['type'] == 'NEPAM'
    assert combined['blocks']['threshold'] == 0.2
    with pytest.raises(ValueError, match='unknown method'):
        resolve('pptx')
    with pytest.raises(ValueError, match='key=value'):
        resolve('ppt:threshold')
