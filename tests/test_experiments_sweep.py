"""The sweep's output worth reading: a line per phase before the progress
bar, a style per series in its plot, its CSV read back for plotting."""
import re

import matplotlib.pyplot as plt
import pytest
from conftest import ROOT, TINY_CONFIG
from matplotlib.colors import to_hex

from mmtokred.console import duration
from mmtokred.experiments.recipes import COMPARE_TARGETS, METHODS
from mmtokred.experiments.pareto_plot import (MOST_SERIES, pareto_figure,
                                              series_styles)
from mmtokred.experiments.sweep import sweep
from mmtokred.experiments.sweep_table import (COLUMNS, JSON_ONLY,
                                              format_histograms, format_sweep,
                                              read_table, write_table)


def test_sweep_says_what_it_does_before_the_bar(video_data, tiny_checkpoint,
                                                capsys):
    rows = sweep(str(TINY_CONFIG), [tiny_checkpoint], ['nepam'],
                 targets=[0.7], repeats=1,
                 cfg_options={
                     'test_dataloader.dataset.ann_file':
                     video_data['ann_file'],
                     'test_dataloader.dataset.data_prefix.video':
                     video_data['videos']})
    assert [r['method'] for r in rows] == ['dense', 'nepam']
    # The CSV's columns are the rows' keys, in order.
    assert [list(r) for r in rows] == [[*COLUMNS, *JSON_ONLY]] * 2
    out = capsys.readouterr().out
    phases = [
        r'bisected 1 method x target points to their FLOPs \(counted from '
        r'the shapes, no forward pass\) in [\d.]+ (s|min)\n',
        r'timing 2 reductions on batches of 8 random views: a warm-up pass, '
        r'then 1 timed pass taking turns\n',
        r'warm-up pass [\d.]+ (s|min): about [\d.]+ (s|min) to go\n',
        r"decoding the test clips once, through the config's test "
        r'pipeline\n',
        # Then mmengine's bar (to the sys.stdout of its import: not
        # captured here).
        r'evaluating 2 points x 1 checkpoint on the 5 test clips\n',
    ]
    positions = [re.search(phase, out) for phase in phases]
    assert all(positions), out
    starts = [p.start() for p in positions]
    assert starts == sorted(starts), out


def test_durations_read_as_a_person_reads_them():
    assert [duration(s) for s in (0.04, 3.14, 42.4, 119, 150)] == [
        '0.0 s', '3.1 s', '42 s', '119 s', '2.5 min']


def test_series_styles_tell_every_series_apart():
    styles = series_styles(MOST_SERIES)
    looks = [(s['color'], s['marker'], s['linestyle']) for s in styles]
    assert len(set(looks)) == MOST_SERIES
    # Colour and marker alone for the first 70, and neighbours differ in
    # both.
    assert len({look[:2] for look in looks[:70]}) == 70
    for a, b in zip(looks, looks[1:]):
        assert a[0] != b[0] and a[1] != b[1]
    assert series_styles(3) == styles[:3]
    with pytest.raises(ValueError, match='told apart'):
        series_styles(MOST_SERIES + 1)


def _rows(methods):
    rows = []
    for model in (0, 1):
        rows.append(dict(model=model, method='dense', target=1., speedup=1.,
                         flops_ratio=1., top1=0.9, retention=1.))
        for i, method in enumerate(methods):
            for target in (0.7, 0.5):
                rows.append(dict(model=model, method=method, target=target,
                                 flops_ratio=target, speedup=1 / target,
                                 top1=0.8 - 0.01 * i, retention=0.9))
    return rows


def _series(figure):
    """label -> (colour, marker, line style) of every line of every axis
    (one look per label); closes the figure."""
    drawn = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            look = (to_hex(line.get_color()), line.get_marker(),
                    line.get_linestyle())
            assert drawn.setdefault(line.get_label(), look) == look
    plt.close(figure)
    return drawn


def test_the_pareto_plot_draws_each_series_in_its_own_style():
    main = [m for m, method in METHODS.items()
            if method.targets != COMPARE_TARGETS]
    assert len(main) > 10  # more than matplotlib's colours
    figure = pareto_figure(_rows(main + ['prune_drop']))
    drawn = _series(figure)
    assert len(figure.axes) == 3 and set(drawn) == set(main) | {'dense'}
    assert drawn.pop('dense') == ('#000000', '*', 'None')
    # No two series alike in colour and marker: the line style alone is
    # hard to see on short lines and in the legend.
    assert len({look[:2] for look in drawn.values()}) == len(main)
    assert ('#000000', '*') not in {look[:2] for look in drawn.values()}


def test_the_csv_reads_back_as_the_sweep_made_it(tmp_path):
    rows = [dict(model=0, method='dense', target=1., knob=0., gflops=1.5,
                 flops_ratio=1., speedup=1., top1=0.5, agreement=1.,
                 retention=None, branches='{}', statistic='null',
                 token_reduction='null', speed_spread=0.05, noisy=False),
            dict(model=1, method='nepam_default', target=None, knob=0.,
                 gflops=1.25, flops_ratio=0.8, speedup=1.2, top1=0.25,
                 agreement=0.75, retention=0.5, branches='{"pool": 2}',
                 statistic='[0.1, 0.2, 0.3]',
                 token_reduction='{"input": {"type": "NEPAM"}}',
                 speed_spread=None, noisy=None)]
    write_table(rows, str(tmp_path / 'sweep'))
    assert read_table(str(tmp_path / 'sweep.csv')) == rows


def test_the_committed_sweep_plots_from_its_csv():
    rows = read_table(str(ROOT / 'docs' / 'proxy_sweep.csv'))
    assert {r['model'] for r in rows} == {0, 1}
    drawn = _series(pareto_figure(rows))
    assert len(drawn) == 12  # the 11 main methods and dense
    assert len({look[:2] for look in drawn.values()}) == 12


def test_points_whose_tokens_depend_on_the_clip_are_counted_per_view(
        video_data, tiny_checkpoint, tmp_path, capsys):
    """A threshold's FLOPs are each clip's (the mean of its views'), from
    the tokens they kept; such a point is not timed on random views (which
    would keep every token)."""
    configs = []
    for name, reduction in (
            ('nepam_threshold', "dict(input=dict(type='NEPAM', "
             "window=(1, 2, 2), ratio=None, threshold=0.3))"),
            ('tome_threshold', "dict(blocks=dict(type='ToMe', r=8, "
             "threshold=0.5))")):
        path = tmp_path / f'{name}.py'
        path.write_text(f"_base_ = '{TINY_CONFIG}'\n"
                        f'model = dict(backbone=dict(token_reduction='
                        f'{reduction}))\n')
        configs.append(str(path))
    rows = sweep(str(TINY_CONFIG), [tiny_checkpoint], [], repeats=1,
                 configs=configs, cfg_options={
                     'test_dataloader.dataset.ann_file':
                     video_data['ann_file'],
                     'test_dataloader.dataset.data_prefix.video':
                     video_data['videos']})
    assert 'timing 1 reductions' in capsys.readouterr().out  # dense only
    dense, *adaptive = rows
    assert dense['clip_flops'] is None and dense['speedup'] == 1
    for row in adaptive:
        assert row['speedup'] is None and row['speed_spread'] is None
        assert len(row['clip_flops']) == 5
        assert row['flops_ratio'] == pytest.approx(
            sum(row['clip_flops']) / 5, abs=1e-4)
        assert 0 < min(row['clip_flops']) <= max(row['clip_flops']) < 1
    write_table(rows, str(tmp_path / 'sweep'))
    read = read_table(str(tmp_path / 'sweep.csv'))
    assert 'clip_flops' not in read[0] and read[1]['speedup'] is None
    table = format_sweep(read)
    assert re.search(r'nepam_threshold\s+-\s+[\d.]+\s+-\s', table), table
    histograms = format_histograms(rows)
    assert histograms.count('| FLOPs of dense | clips | |') == 2
    assert 'nepam_threshold, model 0: 5 clips' in histograms
