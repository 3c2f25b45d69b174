"""The accuracy proxy: generated actions, training, sweep, token pictures."""
import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_tool
from mmaction.registry import DATASETS

from mmtokred.data import ACTIONS, render_clip, write_action_dataset
from mmtokred.ops import neighbour_merge
from mmtokred.visualization import overlay, token_map

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


def _centre(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero((frame != background).any(-1))
    return np.array([columns.mean(), rows.mean()])


def test_motion_defines_the_class():
    # On flat backgrounds: 'moves right' shifts the object's centre right,
    # 'moves fast' twice as far in one of the four directions.
    moved = {}
    for label in (0, 4):
        rng = np.random.default_rng(3)
        while True:
            frames = render_clip(rng, label, 16, 64).astype(int)
            background = frames[0, 0, 0]
            if (frames[:, 0, 0] == background).all():
                break
        moved[label] = (_centre(frames[-1], background) -
                        _centre(frames[0], background))
    assert moved[0][0] > 5 and abs(moved[0][1]) < 2
    assert 1.6 < np.abs(moved[4]).max() / moved[0][0] < 2.4
    with pytest.raises(ValueError, match='label'):
        render_clip(rng, len(ACTIONS), 8, 32)


def test_every_object_stands_out():
    for seed in range(30):
        # 'disappears' between frames 15 and 16: what changes is the object.
        frames = render_clip(np.random.default_rng(seed), 9, 32,
                             64).astype(int)
        changed = np.abs(frames[16] - frames[15]).sum(-1) >= 100
        assert changed.sum() >= 80, seed


def data_options(paths):
    options = []
    for split in ('train', 'val', 'test'):
        options += [
            f'{split}_dataloader.dataset.ann_file={paths[split]}',
            f"{split}_dataloader.dataset.data_prefix.video={paths['videos']}",
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.batch_size=4',
        ]
    return options


def test_train_then_sweep(actions, tmp_path):
    _, paths = actions
    run_tool([
        sys.executable, 'tools/train.py', str(PROXY), '--work-dir',
        str(tmp_path / 'train'), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', *data_options(paths)
    ])
    checkpoint = tmp_path / 'train' / 'epoch_1.pth'
    assert checkpoint.exists()
    sweep_dir = tmp_path / 'sweep'
    result = run_tool([
        sys.executable, 'tools/sweep.py', str(PROXY), str(checkpoint),
        '--methods', 'nepam', 'jmp', '--repeats', '1', '--work-dir',
        str(sweep_dir), '--cfg-options', *data_options(paths)
    ])
    rows = json.loads((sweep_dir / 'sweep.json').read_text())
    assert [r['method'] for r in rows][:2] == ['dense', 'nepam']
    assert len(rows) == 1 + 5 + 4
    dense = rows[0]
    assert dense['agreement'] == 1 and dense['flops_ratio'] == 1
    assert all(0 <= r['top1'] <= 1 for r in rows)
    nepam = {r['budget']: r for r in rows if r['method'] == 'nepam'}
    assert nepam[1.0]['flops_ratio'] < nepam[0.25]['flops_ratio'] < 1
    assert (sweep_dir / 'sweep.csv').read_text().startswith('method,budget')
    assert (sweep_dir / 'sweep.png').stat().st_size > 10000
    assert 'wrote' in result.stdout


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
    assert 'input: 130 tokens' in result.stdout
    assert 'block 1: 98 tokens' in result.stdout  # 130 - 2 x 16 by ToMe
    assert (tmp_path / 'tokens.png').stat().st_size > 1000
    from PIL import Image
    gif = Image.open(tmp_path / 'tokens.gif')
    assert gif.n_frames == 8


def test_dist_train_runs_two_processes(actions, tmp_path):
    _, paths = actions
    result = run_tool([
        'bash', 'tools/dist_train.sh', str(PROXY), '2', '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', *data_options(paths)
    ], env={'PORT': '29531'})
    output = result.stdout + result.stderr
    assert 'GPU number: 2' in output and 'Epoch(val) [1]' in output
    assert (tmp_path / 'epoch_1.pth').exists()
