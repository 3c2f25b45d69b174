"""The redundancy statistics (mmtokred.measure.redundancy) exact on
hand-made clips, and tools/redundancy.py on generated ones."""
import argparse
import gc
import importlib.util
import math
import sys
import types
import warnings
import weakref
from pathlib import Path
from typing import List

import pytest
import torch
from mmengine.config import Config, DictAction
from torch import nn

from conftest import ROOT, TINY_CONFIG, run_tool
from mmtokred.measure.redundancy import (Redundancy, pair_distances,
                                         share_distance)
from mmtokred.reducers import build_reducer


def test_share_distances_are_the_order_statistics():
    # One frame of 8 one-pixel tubelets: 1x1x2 windows (0, 1), (0, 2),
    # (0, 3), (0, 4) score half their difference (the reference's own 0 is
    # in the mean): 0.5, 1, 1.5, 2.
    clip = torch.tensor([0., 1, 0, 2, 0, 3, 0, 4]).reshape(1, 1, 1, 1, 8)
    report = Redundancy((1, 1, 1), windows=[(1, 1, 2)])
    report.add(clip)
    assert report.windows_per_view((1, 1, 2)) == 4
    # ceil(q * 4)-th smallest: 1st, 1st, 2nd, 3rd.
    assert report.share_distances((1, 1, 2)) == [0.5, 0.5, 1.0, 1.5]
    assert report.merged_share((1, 1, 2), 1.2) == 0.5
    assert share_distance(torch.tensor([3., 1., 2.]), 1.0) == 3.0


def test_relative_distances_divide_by_the_pair_distance():
    # Two tubelets: every pair of distinct ones is 3 apart (l1) or 9 (l2).
    clip = torch.tensor([0., 3.]).reshape(1, 1, 1, 1, 2)
    pixels = clip.reshape(1, 2, 1)
    assert pair_distances(pixels, 'l1').tolist() == [3.0]
    assert pair_distances(pixels, 'l2').tolist() == [9.0]
    report = Redundancy((1, 1, 1), windows=[(1, 1, 2)])
    report.add(clip)
    assert report.share_distances((1, 1, 2), relative=True) == [0.5] * 4


def test_bad_distance_is_named():
    with pytest.raises(ValueError, match='distance'):
        Redundancy((2, 16, 16), distance='cosine')


def test_redundancy_tool_on_generated_clips(video_data):
    out = run_tool([
        sys.executable, 'tools/redundancy.py',
        str(TINY_CONFIG.parent / 'videomae_tiny_nepam.py'),
        '--ann-file', video_data['ann_file'],
        '--data-prefix', video_data['videos'], '--clips', '3']).stdout
    lines = out.splitlines()
    assert lines[0].startswith('3 clips of ')
    for window in ('2x1x1', '1x1x2', '1x2x2', '2x2x2'):
        row = next(line for line in lines if line.startswith(window))
        assert row.count(' / ') == 4, row
    assert "the config's NEPAM" in lines[-1]


# ----------------------------------------------------------------- issue 31

NEPAM_CONFIG = str(TINY_CONFIG.parent / 'videomae_tiny_nepam.py')


def redundancy_tool() -> types.ModuleType:
    """tools/redundancy.py as a module, to run it in-process."""
    spec = importlib.util.spec_from_file_location(
        'redundancy_tool', ROOT / 'tools' / 'redundancy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_redundancy(monkeypatch, capsys, *args: str) -> str:
    """What ``tools/redundancy.py ARGS`` prints, run in-process."""
    tool = redundancy_tool()
    monkeypatch.setattr(sys, 'argv', ['tools/redundancy.py', *args])
    tool.main()
    return capsys.readouterr().out


def data_args(ann_file, videos) -> List[str]:
    return ['--ann-file', str(ann_file), '--data-prefix', str(videos)]


def tiny_cfg(video_data, **loader) -> Config:
    cfg = Config.fromfile(NEPAM_CONFIG)
    cfg.merge_from_dict({
        'test_dataloader.dataset.ann_file': video_data['ann_file'],
        'test_dataloader.dataset.data_prefix.video': video_data['videos'],
        **{f'test_dataloader.{key}': value
           for key, value in loader.items()}})
    return cfg


def count_merged(nepam, views: torch.Tensor, tubelet) -> int:
    """Windows NEPAM merges in ``views``, by its own forward."""
    projection = nn.Conv3d(views.shape[1], 8, tubelet, tubelet)
    grid = [n // s for n, s in zip(views.shape[2:], tubelet)]
    pos_embed = torch.zeros(1, math.prod(grid), 8)
    with torch.no_grad():
        _, state = nepam(views, projection, pos_embed, False)
    return int((state.size == math.prod(nepam.window)).sum())


def test_clips_can_stream_without_keeping_the_batches(video_data):
    # Before: every batch decoded up front and kept (a ViT-B clip's views:
    # about 50 MB), whoever made the clips.
    from mmtokred.experiments.clips import Clips
    cfg = tiny_cfg(video_data)
    kept = Clips(cfg, 'test', num_clips=3, batch_size=1)
    assert isinstance(kept.batches, list) and len(kept.batches) == 3
    streamed = Clips(cfg, 'test', num_clips=3, batch_size=1, keep=False)
    assert not isinstance(streamed.batches, list)
    seen = []
    for batch in streamed.batches:
        gc.collect()
        # Nothing keeps the batches the loop has moved past.
        assert all(ref() is None for ref in seen[:-1])
        seen.append(weakref.ref(batch['inputs'][0]))
    assert len(seen) == 3
    for again, first in zip(streamed.batches, kept.batches):  # decoded anew
        assert torch.equal(again['inputs'][0], first['inputs'][0])


def test_redundancy_tool_keeps_no_decoded_view(video_data, monkeypatch,
                                               capsys):
    from mmtokred.experiments import clips as clips_module
    seen, made = [], []

    class Watched(clips_module.Clips):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(kwargs)
            self.batches = self._watch(self.batches)

        @staticmethod
        def _watch(batches):
            for batch in batches:
                gc.collect()
                # The tool still holds the batch before this one, no older.
                assert all(ref() is None for ref in seen[:-1])
                seen.append(weakref.ref(batch['inputs'][0]))
                yield batch

    monkeypatch.setattr(clips_module, 'Clips', Watched)
    out = run_redundancy(monkeypatch, capsys, NEPAM_CONFIG, '--clips', '3',
                         *data_args(video_data['ann_file'],
                                    video_data['videos']),
                         '--cfg-options', 'test_dataloader.batch_size=1')
    assert out.startswith('3 clips of ')
    assert len(seen) == 3 and made[0].get('keep') is False


def test_redundancy_keeps_only_the_window_scores():
    # Per view and window one score (and its relative), not the pixels:
    # nothing the size of a view stays.
    views = torch.randn(3, 3, 4, 32, 32)
    report = Redundancy((2, 8, 8), windows=[(1, 2, 2), (2, 2, 2)])
    report.add(views)
    for table in (report.scores, report.relative):
        for window, parts in table.items():
            for part in parts:
                assert part.shape == (3, report.windows_per_view(window))
                assert part.untyped_storage().nbytes() == \
                    part.numel() * part.element_size()


def test_clips_decode_with_no_more_workers_than_cpus(video_data,
                                                     monkeypatch):
    # Before: 8 workers of the ViT-B configs on 2 CPUs, and torch's warning
    # twice: once as the data loader is built, once as it is iterated.
    import os
    from mmtokred.experiments.clips import Clips
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0},
                        raising=False)
    cfg = tiny_cfg(video_data, num_workers=8, persistent_workers=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        clips = Clips(cfg, 'test', num_clips=2, batch_size=1, keep=False)
        assert clips.num_workers == 1 and clips.batches.num_workers == 1
        assert len(list(clips.batches)) == 2
    assert not [w for w in caught if 'worker processes' in str(w.message)]
    assert Clips.workers(0) == 0
    monkeypatch.delattr(os, 'sched_getaffinity', raising=False)
    monkeypatch.setattr(os, 'cpu_count', lambda: 3)
    assert Clips.workers(8) == 3 and Clips.workers(2) == 2
    monkeypatch.setattr(os, 'cpu_count', lambda: None)
    assert Clips.workers(8) == 8  # nothing tells: as configured


def test_redundancy_tool_reads_no_label(video_data, tmp_path, monkeypatch,
                                        capsys):
    # Before: CheckedVideoDataset refused a list of paths ("no label
    # after") and labels beyond the config's num_classes, which the
    # redundancy never uses.
    lines = Path(video_data['ann_file']).read_text().split('\n')
    paths = [line.split()[0] for line in lines if line.strip()]
    for name, text in (('paths', '\n'.join(paths)),
                       ('unknown_labels',
                        '\n'.join(f'{path} {400 + i}'
                                  for i, path in enumerate(paths))),
                       ('words', '\n'.join(f'{path} walking'
                                           for path in paths))):
        ann_file = tmp_path / f'{name}.txt'
        ann_file.write_text(text + '\n')
        out = run_redundancy(monkeypatch, capsys, NEPAM_CONFIG, '--clips',
                             '2', *data_args(ann_file, video_data['videos']))
        assert out.startswith(f'2 clips of {ann_file}'), out
    with pytest.raises(RuntimeError, match='cannot open video'):
        ann_file.write_text('missing.mp4\n')
        run_redundancy(monkeypatch, capsys, NEPAM_CONFIG, '--clips', '1',
                       *data_args(ann_file, video_data['videos']))


@pytest.mark.parametrize('window', [(1, 2, 2), (2, 2, 2)])
def test_merge_threshold_merges_the_share_in_nepams_comparison(window):
    torch.manual_seed(0)
    views = torch.randn(3, 3, 4, 32, 32)
    report = Redundancy((2, 8, 8), windows=[window])
    report.add(views)
    n = 3 * report.windows_per_view(window)
    for share in (0.01, 0.1, 0.25, 0.36, 0.5, 0.9, 1.0):
        threshold = report.merge_threshold(window, share)
        nepam = build_reducer(dict(type='NEPAM', window=window,
                                   threshold=threshold))
        wanted = math.ceil(share * n)
        assert count_merged(nepam, views, (2, 8, 8)) == wanted
        assert report.merged_share(window, threshold) == \
            pytest.approx(wanted / n)
        # The least such: the fp32 below it merges fewer.
        below = float(torch.nextafter(torch.tensor(threshold),
                                      torch.tensor(-math.inf)))
        nepam = build_reducer(dict(type='NEPAM', window=window,
                                   threshold=below))
        assert count_merged(nepam, views, (2, 8, 8)) < wanted


def test_merge_threshold_takes_ties_along():
    from mmtokred.measure.redundancy import merge_threshold
    # Scores 0.5, 0.5, 1.5, 2 (see the first test): a quarter is the first
    # 0.5, and its tie merges with it.
    clip = torch.tensor([0., 1, 0, 1, 0, 3, 0, 4]).reshape(1, 1, 1, 1, 8)
    report = Redundancy((1, 1, 1), windows=[(1, 1, 2)])
    report.add(clip)
    threshold = report.merge_threshold((1, 1, 2), 0.25)
    assert 0.5 < threshold < 0.50001
    assert report.merged_share((1, 1, 2), threshold) == 0.5
    assert report.merge_threshold((1, 1, 2), 1.0) > 2.
    assert merge_threshold(torch.tensor([0., 0., 1.]), 0.5) == 1e-45
    with pytest.raises(ValueError, match=r'share must be a number in \(0, 1'):
        report.merge_threshold((1, 1, 2), 0.)


def _stage(cfg: Config):
    return build_reducer(dict(cfg.model.backbone.token_reduction.input))


def test_redundancy_tool_prints_the_threshold_for_a_share(
        video_data, tmp_path, monkeypatch, capsys):
    # Before: quantiles, but no threshold to put in a config.
    args = [*data_args(video_data['ann_file'], video_data['videos']),
            '--clips', '3']
    out = run_redundancy(monkeypatch, capsys, NEPAM_CONFIG, *args,
                         '--merge-share', '0.25', '0.5')
    lines = out.splitlines()
    head = lines.index(next(line for line in lines
                            if line.startswith("NEPAM's threshold")))
    assert lines[head - 1].startswith("the config's NEPAM")  # kept as it was
    # The same views as the tool's, and their scores.
    from mmaction.registry import MODELS
    from mmtokred.experiments.clips import Clips
    cfg = tiny_cfg(video_data)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    views = torch.cat([preprocessor(batch, training=False)['inputs'].flatten(
        0, 1) for batch in Clips(cfg, 'test', num_clips=3, keep=False)
        .batches])
    report = Redundancy((2, 16, 16), [(2, 2, 2)])
    report.add(views)
    scores = torch.cat(report.scores[(2, 2, 2)], 0).flatten().sort().values
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    for number, share in ((1, 0.25), (2, 0.5)):
        said, config, options = lines[head + 3 * number - 2:
                                      head + 3 * number + 1]
        assert said.startswith(f'  2x2x2, {share:.0%} merged: threshold ')
        threshold = float(said.split()[4])
        assert config == (
            "    config: model = dict(backbone=dict(token_reduction=dict("
            f"input=dict(type='NEPAM', window=(2, 2, 2), ratio=None, "
            f'threshold={threshold!r}))))')
        # --cfg-options: the config's NEPAM with the threshold for budget.
        merged = Config.fromfile(NEPAM_CONFIG)
        merged.merge_from_dict(parser.parse_args(
            options.split()).cfg_options)
        nepam = _stage(merged)
        assert nepam.threshold == threshold and nepam.ratio is None
        # NEPAM merges the share: every window up to the ceil(q n)-th
        # smallest score, ties of it included, and none above.
        kth = scores[math.ceil(share * scores.numel()) - 1]
        count = count_merged(nepam, views, (2, 16, 16))
        assert count == int((scores <= kth).sum()) >= share * scores.numel()
        assert f'merges {count / scores.numel():.1%} of the windows' in said
        # The config line, in a config of its own.
        child = tmp_path / f'threshold_{number}.py'
        child.write_text(f"_base_ = '{NEPAM_CONFIG}'\n"
                         + config.split('config: ')[1] + '\n')
        assert _stage(Config.fromfile(str(child))).threshold == threshold

    # A config without NEPAM: every window reported, each a NEPAM stage.
    out = run_redundancy(monkeypatch, capsys, str(TINY_CONFIG), *args,
                         '--merge-share', '0.5')
    options = [line.split()[1:] for line in out.splitlines()
               if line.startswith('    --cfg-options')]
    assert len(options) == 4
    for window, option in zip(((2, 1, 1), (1, 1, 2), (1, 2, 2), (2, 2, 2)),
                              options):
        merged = Config.fromfile(str(TINY_CONFIG))
        merged.merge_from_dict(parser.parse_args(
            ['--cfg-options', *option]).cfg_options)
        assert _stage(merged).window == window


def test_redundancy_tool_refuses_a_share_outside_0_1(monkeypatch, capsys):
    tool = redundancy_tool()
    for share in ('0', '1.5', 'nan'):
        monkeypatch.setattr(sys, 'argv', ['tools/redundancy.py', NEPAM_CONFIG,
                                          '--merge-share', share])
        with pytest.raises(SystemExit):
            tool.parse_args()
        assert f'argument --merge-share: {share} is not a number in (0, 1]' \
            in capsys.readouterr().err
