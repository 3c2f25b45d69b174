"""Accuracy kept per FLOP saved: every method at a range of FLOPs budgets.

Every method of :mod:`.recipes` has one knob in [0, 1] (how much it
removes); for each FLOPs target (a fraction of dense) the sweep bisects the
knob to the least reduction whose FLOPs are at most the target, counted
from the shapes (:class:`~mmtokred.measure.flops.ShapeFlops`, the count of
``tools/benchmark.py`` without a forward pass). Everything a method does
not vary comes from its registered defaults, so the sweep measures each
method at its default.

Each point then runs the config's test data set and metric (MMAction2's
data pipeline and evaluator, the data decoded once and kept in memory:
:class:`~.clips.Clips`)
through the model with that token reduction, and records top-1, agreement
with the dense model's predictions, the FLOPs ratio, the measured speedup,
the branches adaptive reducers took, PPT's statistic, and the object
retention: the share of actor tubelets (the ``{list}_actor.npy`` masks of
the generated proxy, where present) still held by some token after the last
block, read from the source map.

The speedup is timed as the benchmark times it (``forward.seconds_per_batch``,
as ``compare`` uses it): every point and dense take turns in each repetition,
so a noisy neighbour slows them alike; a point whose timed passes spread by
more than ``NOISY_SPREAD`` of their median is marked noisy.

A configured point whose tokens depend on each clip (NEPAM's or ToMe's
threshold) has no FLOPs from the shapes: each test view's are counted from
the tokens it kept (``ShapeFlops.clip_gflops``; the row's ``gflops`` is
their mean, the JSON's ``clip_flops`` each clip's ratio: the mean of its
views'), and it is not
timed on random views, which would keep every token
(``tools/benchmark.py --batching`` times it on clips that differ).

It says what it does as it goes: a line per phase (the bisection with its
time, the timing with an estimate from a measured unit, decoding), then the
evaluation's progress bar.
"""
import csv
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config
from mmengine.utils import ProgressBar

from .. import checkpoint_fit
from ..console import duration
from ..measure.flops import ShapeFlops
from ..measure.forward import (forward_fn, interleaved_times,
                               seconds_per_batch, spread)
from ..measure.observe import TokenRecorder
from ..ops.packed import split_clips
from .clips import Clips, recogniser
from .recipes import COMPARE_TARGETS, METHODS, least_knob, model_grid, resolve

#: A point whose timed passes spread (``(max - min) / median``) by more than
#: this is marked noisy: its speedup is not to be trusted.
NOISY_SPREAD = 0.2


class Costs:
    """FLOPs (from the shapes, :class:`ShapeFlops`) and speed (measured on
    a model with random weights: it does not depend on them) of token
    reductions on one model."""

    def __init__(self, cfg: Config) -> None:
        backbone = cfg.model.backbone
        shape = (backbone.get('in_channels', 3),
                 backbone.get('num_frames', 16),
                 backbone.get('img_size', 224), backbone.get('img_size', 224))
        self.inputs = torch.randn(8, 1, *shape,
                                  generator=torch.Generator().manual_seed(0))
        self.model = recogniser(cfg, device='cpu')
        self.flops = ShapeFlops(cfg.model)
        self.dense = self.flops.dense

    def gflops(self, reduction: Optional[Dict]) -> Optional[float]:
        """GFLOPs of one view, as ``tools/benchmark.py`` counts them (None
        where each clip keeps its own tokens: counted per clip by
        :func:`evaluate`)."""
        if self.flops.depends_on_clips(reduction):
            return None
        return self.flops.gflops(reduction)

    def speedups(self, reductions: Dict[str, Optional[Dict]],
                 repeats: int) -> Dict[str, Dict[str, Optional[float]]]:
        """Speed against dense, batches of 8 views, the points taking
        turns (:func:`interleaved_times`): per name, ``speedup`` (median
        time of dense over the point's) and ``spread`` of the point's timed
        passes (:func:`spread`). Dense is the entry whose reduction is None
        (timed once, so its speedup is 1), added as ``'dense'`` if none
        is. Says how long it will take, from the warm-up pass."""
        reductions = dict(reductions)
        dense = next((name for name, r in reductions.items() if r is None),
                     None)
        if dense is None:
            dense = 'dense'
            reductions[dense] = None
        batch = forward_fn(self.model, self.inputs, False)

        def with_reduction(reduction):

            def run():
                self.model.backbone.set_token_reduction(reduction)
                return batch()

            return run

        runs = {name: with_reduction(r) for name, r in reductions.items()}
        print(f'timing {len(runs)} reductions on batches of '
              f'{len(self.inputs)} random views: a warm-up pass, then '
              f'{repeats} timed pass{"es" if repeats > 1 else ""} taking '
              'turns', flush=True)
        # interleaved_times' warm-up, done here to be timed: one pass of
        # every point, the unit of the estimate (a little slower than a
        # timed pass: the estimate errs long).
        warmup = sum(seconds_per_batch(runs, 0, 1).values())
        print(f'warm-up pass {duration(warmup)}: about '
              f'{duration(repeats * warmup)} to go', flush=True)
        times = interleaved_times(runs, warmup=0, repeats=repeats)
        reference = statistics.median(times[dense])
        return {name: dict(speedup=reference / statistics.median(ts),
                           spread=spread(ts))
                for name, ts in times.items()}


def actor_masks(cfg: Config, clips: Clips) -> Optional[torch.Tensor]:
    """``(clips, tubelets)`` masks of where the actor is in each test clip
    (the ``{list}_actor.npy`` beside the generated proxy's test list), or
    None where there are none."""
    actor = Path(str(cfg.test_dataloader.dataset.ann_file)).with_suffix('')
    actor = actor.with_name(actor.name + '_actor.npy')
    if not actor.exists():
        return None
    masks = np.load(actor)
    if isinstance(cfg.test_dataloader.dataset.get('indices'), int):
        masks = masks[:len(clips)]  # the first clips of the list
    if len(masks) != len(clips):
        raise ValueError(f'{actor} has {len(masks)} masks for '
                         f'{len(clips)} clips of the test list')
    return torch.from_numpy(masks.reshape(len(masks), -1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, clips: Clips,
             reduction: Optional[Dict],
             actor: Optional[torch.Tensor] = None,
             flops: Optional[ShapeFlops] = None) -> Dict:
    """Top-1 (the split's evaluator), predictions, object retention (with
    ``actor`` masks) and what the reducers reported, of ``model`` with
    ``reduction`` on ``clips``; with ``flops``, also the GFLOPs of each
    view (``clip_gflops``: from the tokens each kept), for reductions whose
    tokens depend on the clip."""
    backbone = model.backbone
    track = actor is not None and reduction is not None
    backbone.set_token_reduction(
        None if reduction is None else dict(reduction, track_source=track))
    reducers = backbone.token_reduction.reducers
    for reducer in reducers:
        reducer.observing = True
    represented: List[torch.Tensor] = []
    predictions: List[int] = []
    clip_gflops: List[float] = []
    evaluator = clips.evaluator()
    recorder = TokenRecorder(backbone)
    for batch in clips.batches:
        with recorder:
            outputs = model.test_step(batch)
        evaluator.process(data_samples=outputs, data_batch=batch)
        predictions += [int(o.pred_score.argmax()) for o in outputs]
        if flops is not None:
            clip_gflops += [flops.clip_gflops(reduction, tokens)
                            for tokens in recorder.tokens_of_clips()]
        if track:
            state = recorder.final_state
            held = state.source.amax(1) if state.lengths is None else \
                torch.cat([clip.amax(1) for clip in split_clips(
                    state.source, state.lengths)])
            if held.shape[0] != len(outputs):
                raise ValueError('object retention needs one view per '
                                 'clip (the masks are per clip)')
            represented.append(held > 0)
    metrics = evaluator.evaluate(len(clips))
    result = dict(top1=float(metrics['acc/top1']), predictions=predictions,
                  retention=None, branches={}, statistic=None,
                  clip_gflops=clip_gflops or None)
    if actor is not None:
        if track:
            held = torch.cat(represented).cpu()
            result['retention'] = int((held & actor).sum()) / int(actor.sum())
        else:
            result['retention'] = 1.
    for reducer in reducers:
        result['branches'].update(reducer.branch_counts())
        observed = reducer.observations().get('statistic')
        if observed is not None:
            result['statistic'] = [
                float(q) for q in torch.quantile(
                    observed.float().cpu(), torch.tensor([0.1, 0.5, 0.9]))]
        reducer.reset_counts()
    return result


def configured_reduction(path: str) -> Optional[Dict]:
    """The ``model.backbone.token_reduction`` a config file sets."""
    return Config.fromfile(path).model.backbone.get('token_reduction')


def sweep(config: str,
          checkpoints: Sequence[str],
          methods: Sequence[str] = tuple(METHODS),
          targets: Optional[Sequence[float]] = None,
          repeats: int = 3,
          cfg_options: Optional[Dict] = None,
          configs: Sequence[str] = ()) -> List[Dict]:
    """Evaluate dense and every method at its FLOPs targets (or
    ``targets``), for each checkpoint. Methods are names of ``METHODS`` or
    specs with options (see :func:`resolve`). ``configs`` are config files
    whose token reduction is evaluated as configured (named by the file);
    ``{model}`` in a path stands for the checkpoint's index, for one
    config per checkpoint (e.g. calibrated on each model).

    Returns:
        One row per checkpoint and point: model (index of the checkpoint),
        method, target (None: as configured), knob, gflops, flops_ratio,
        speedup, top1, agreement
        (share of test clips predicted as dense predicts them), retention
        (share of actor tubelets held after the last block; None without
        masks), branches, statistic (PPT's 10/50/90th percentiles), the
        token_reduction used, speed_spread (``(max - min) / median`` of the
        point's timed passes, taken in turns with every other point; None
        for one repeat) and noisy (speed_spread > ``NOISY_SPREAD``; None
        for one repeat).
    """
    resolved = {spec: resolve(spec) for spec in methods}
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    if not checkpoints:
        raise ValueError('sweep needs at least one checkpoint')
    for target in targets or ():
        if not 0 < target <= 1:
            raise ValueError(f'FLOPs targets must be in (0, 1], got {target}')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    grid = model_grid(cfg)
    costs = Costs(cfg)
    models = range(len(checkpoints))
    searched = sum(len(targets or resolved[m].targets) for m in methods
                   if resolved[m].targets)
    started = time.perf_counter()
    # (method, target, knob, the token_reduction of each model)
    points = [('dense', 1., 0., [None for _ in models])]
    for method in methods:
        make = resolved[method].make
        if not resolved[method].targets:
            points.append((method, None, 0., [make(0., grid) for _ in models]))
            continue
        for target in targets or resolved[method].targets:
            knob = least_knob(
                lambda k: costs.gflops(make(k, grid)) / costs.dense, target)
            if knob is None:
                warnings.warn(f'{method} cannot reach {target} of the dense '
                              'FLOPs: skipped')
                continue
            points.append((method, target, knob,
                           [make(knob, grid) for _ in models]))
    if searched:
        print(f'bisected {searched} method x target points to their FLOPs '
              '(counted from the shapes, no forward pass) in '
              f'{duration(time.perf_counter() - started)}', flush=True)
    for path in configs:
        points.append((Path(path).stem.replace('{model}', '*'), None, 0.,
                       [configured_reduction(path.replace('{model}', str(m)))
                        for m in models]))
    distinct = {json.dumps(r): r for p in points for r in p[3]}
    gflops = {key: costs.gflops(r) for key, r in distinct.items()}
    # Random views tell nothing of what a clip-dependent budget keeps: those
    # are timed by tools/benchmark.py on clips that differ (--batching).
    timed = {key: r for key, r in distinct.items()
             if gflops[key] is not None}
    speeds = costs.speedups(timed, repeats)  # dense: 'null', timed once
    untimed = dict(speedup=None, spread=None)

    print("decoding the test clips once, through the config's test "
          'pipeline', flush=True)
    clips = Clips(cfg)
    actor = actor_masks(cfg, clips)
    network = recogniser(cfg)
    rows = []
    print(f'evaluating {len(points)} points x {len(checkpoints)} '
          f'checkpoint{"s" if len(checkpoints) > 1 else ""} on the '
          f'{len(clips)} test clips', flush=True)
    progress = ProgressBar(len(points) * len(checkpoints))
    for model, checkpoint in enumerate(checkpoints):
        checkpoint_fit.load_checkpoint(network, checkpoint,
                                       cfg.get('partial_load'))
        reference = None
        for method, target, knob, reductions in points:
            reduction = reductions[model]
            key = json.dumps(reduction)
            per_clip = gflops[key] is None
            result = evaluate(network, clips, reduction, actor,
                              costs.flops if per_clip else None)
            point_gflops = float(np.mean(result['clip_gflops'])) \
                if per_clip else gflops[key]
            speed = speeds.get(key, untimed)
            if reference is None:
                reference = result['predictions']
            agreement = float(np.mean(
                np.array(result['predictions']) == np.array(reference)))
            rows.append(dict(
                model=model, method=method, target=target,
                knob=round(knob, 4), gflops=point_gflops,
                flops_ratio=point_gflops / gflops['null'],
                speedup=speed['speedup'], top1=result['top1'],
                agreement=agreement, retention=result['retention'],
                branches=json.dumps(result['branches']),
                statistic=json.dumps(result['statistic']),
                token_reduction=key,
                speed_spread=_round(speed['spread']),
                noisy=_noisy(speed['spread']),
                clip_flops=None if not per_clip else [
                    round(float(g) / gflops['null'], 4) for g in np.reshape(
                        result['clip_gflops'], (len(clips), -1)).mean(1)]))
            progress.update()
    return rows


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def _noisy(value: Optional[float]) -> Optional[bool]:
    return None if value is None else value > NOISY_SPREAD


#: Row keys written to the JSON only: each clip's FLOPs ratio (of points
#: whose tokens depend on the clip; None elsewhere), too long for a cell.
JSON_ONLY = ('clip_flops', )


def write_table(rows: List[Dict], out_prefix: str) -> None:
    """``out_prefix``.csv (without ``JSON_ONLY``) and .json."""
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    with open(f'{out_prefix}.csv', 'w', newline='') as f:
        writer = csv.DictWriter(
            f, fieldnames=[k for k in rows[0] if k not in JSON_ONLY],
            extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    with open(f'{out_prefix}.json', 'w') as f:
        json.dump(rows, f, indent=2)


#: How the CSV's columns read back as :func:`sweep` makes them (the
#: others, JSON text, stay strings); an empty cell is None.
_COLUMNS: Dict[str, Callable[[str], object]] = {
    'model': int, 'target': float, 'knob': float, 'gflops': float,
    'flops_ratio': float, 'speedup': float, 'top1': float,
    'agreement': float, 'retention': float, 'speed_spread': float,
    'noisy': lambda cell: cell == 'True'}


def read_table(path: str) -> List[Dict]:
    """The rows of a sweep's CSV (:func:`write_table`), typed as
    :func:`sweep` returns them, e.g. to plot a sweep again."""
    with open(path, newline='') as f:
        return [{key: (None if cell == '' else _COLUMNS[key](cell))
                 if key in _COLUMNS else cell for key, cell in row.items()}
                for row in csv.DictReader(f)]


def format_table(rows: List[Dict]) -> str:
    """One line per point: FLOPs and speed against dense (``*``: noisy,
    ``?``: one timed pass, spread unknown), then top-1, its change against
    dense, agreement and retention (%), each as ``model 0 / model 1 /
    ...``, then the branches and PPT's statistic of model 0; a note under
    the table says what the marks mean where there are any."""
    models = sorted({r['model'] for r in rows})
    dense = {r['model']: r['top1'] for r in rows if r['method'] == 'dense'}
    by_point: Dict[tuple, Dict[int, Dict]] = {}
    for row in rows:
        by_point.setdefault((row['method'], row['target']),
                            {})[row['model']] = row
    width = 7 * len(models) + 2
    figures = (
        ('top-1', lambda r: f"{100 * r['top1']:.1f}"),
        ('change', lambda r: f"{100 * (r['top1'] - dense[r['model']]):+.1f}"),
        ('agree', lambda r: f"{100 * r['agreement']:.1f}"),
        ('retained', lambda r: '-' if r['retention'] is None else
         f"{100 * r['retention']:.1f}"),
    )
    marks = {True: '*', None: '?', False: ' '}
    lines = [f"{'method':<16}{'target':>7}{'FLOPs':>7}{'speed':>7}  " +
             ''.join(f'{name:<{width}}' for name, _ in figures) + 'notes']
    shown = set()
    for (method, target), point in by_point.items():
        first = point[models[0]]
        notes = ' '.join(f'{k}={v}'
                         for k, v in json.loads(first['branches']).items())
        statistic = json.loads(first['statistic'])
        if statistic:
            notes += ' statistic p10/50/90=' + '/'.join(
                f'{s:.3g}' for s in statistic)
        cells = [' / '.join(show(point[m]) for m in models if m in point)
                 for _, show in figures]
        target = '-' if target is None else f'{target:.2f}'
        # Rows without a noisy column (docs/*.csv) have no mark.
        mark = marks[first['noisy']] if 'noisy' in first else ' '
        shown.add(mark)
        speed = '-' if first['speedup'] is None else \
            f"{first['speedup']:.2f}"
        lines.append(f"{method:<16}{target:>7}"
                     f"{first['flops_ratio']:>7.2f}{speed:>6}"
                     f"{mark if first['speedup'] is not None else ' '}  "
                     + ''.join(f'{c:<{width}}' for c in cells) + notes)
    if '*' in shown:
        lines.append(f'* noisy speed: the timed passes spread by more than '
                     f'{100 * NOISY_SPREAD:.0f}% of their median (column '
                     'speed_spread; a noisy dense row makes every speedup '
                     'uncertain); time with more --repeats on a quieter '
                     'machine')
    if '?' in shown:
        lines.append('? one timed pass (--repeats 1): its spread, and so '
                     'whether it is noisy, is unknown')
    return '\n'.join(lines)


def flops_histogram(ratios: Sequence[float], width: float = 0.05,
                    bar: int = 40) -> str:
    """A markdown table of how many clips spent each FLOPs ratio (of
    dense), in bins of ``width``, with a bar of ``#`` scaled to the fullest
    bin."""
    values = torch.as_tensor(list(ratios), dtype=torch.float64)
    if not len(values):
        raise ValueError('no FLOPs ratios to draw')
    # The small offset keeps a ratio on a bin's edge in that bin.
    bins = (values / width + 1e-9).floor().long()
    first = int(bins.min())
    counts = torch.bincount(bins - first).tolist()
    most = max(counts)
    lines = ['| FLOPs of dense | clips | |', '| --- | --- | --- |']
    for index, count in enumerate(counts, first):
        lines.append(f'| {index * width:.2f}-{(index + 1) * width:.2f} | '
                     f"{count} | {'#' * round(bar * count / most)} |")
    return '\n'.join(lines)


def format_histograms(rows: List[Dict]) -> str:
    """:func:`flops_histogram` of every point with ``clip_flops`` (its
    tokens depend on the clip), headed by its method and model; '' where
    there is none."""
    parts = []
    for row in rows:
        if row.get('clip_flops'):
            ratios = row['clip_flops']
            parts.append(
                f"{row['method']}, model {row['model']}: {len(ratios)} "
                f"clips, mean FLOPs {np.mean(ratios):.3f} of dense, top-1 "
                f"{100 * row['top1']:.1f}\n" + flops_histogram(ratios))
    return '\n\n'.join(parts)


#: What tells series apart: ten colours (matplotlib's default cycle), seven
#: markers and, for each further ten series, another line style. 10 and 7
#: have no common factor, so colour and marker repeat only after 70 series,
#: and with the line style after 280.
SERIES_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X')
SERIES_LINESTYLES = ('-', '--', ':', '-.')
MOST_SERIES = 280


def series_styles(count: int) -> List[Dict]:
    """The ``plot`` keywords (color, marker, linestyle) of ``count`` series
    (at most ``MOST_SERIES``), no two alike; neighbours differ in colour and
    marker, and series ten apart in line style too."""
    from matplotlib import colormaps
    colours = colormaps['tab10'].colors
    if count > MOST_SERIES:
        raise ValueError(f'{count} series cannot be told apart in one plot '
                         f'(at most {MOST_SERIES})')
    return [dict(color=colours[i % len(colours)],
                 marker=SERIES_MARKERS[i % len(SERIES_MARKERS)],
                 linestyle=SERIES_LINESTYLES[i // len(colours) %
                                             len(SERIES_LINESTYLES)])
            for i in range(count)]


def pareto_figure(rows: List[Dict], title: str = ''):
    """Top-1 against the FLOPs ratio and against measured speedup, and the
    companion plot of object retention against the FLOPs ratio: one line
    per main method (model 0), each in its own style
    (:func:`series_styles`), dense as a black star."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r['model'] == 0]
    main = [m for m in dict.fromkeys(r['method'] for r in rows)
            if m in METHODS and METHODS[m].targets != COMPARE_TARGETS]
    dense = [r for r in rows if r['method'] == 'dense'][0]
    panels = [('flops_ratio', 'top1', 'FLOPs vs dense', 'top-1 (%)'),
              ('speedup', 'top1', 'measured speedup vs dense', 'top-1 (%)')]
    if dense['retention'] is not None:
        panels.append(('flops_ratio', 'retention', 'FLOPs vs dense',
                       'actor tubelets held after the last block (%)'))
    figure, axes = plt.subplots(1, len(panels),
                                figsize=(5.2 * len(panels), 4.4))
    styles = series_styles(len(main))
    for axis, (x, y, x_label, y_label) in zip(axes, panels):
        for method, style in zip(main, styles):
            points = sorted((r[x], 100 * r[y]) for r in rows
                            if r['method'] == method)
            axis.plot(*zip(*points), label=method, **style)
        axis.plot(dense[x], 100 * dense[y], marker='*', markersize=14,
                  color='black', linestyle='none', label='dense')
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_pareto(rows: List[Dict], out_png: str, title: str = '') -> None:
    """:func:`pareto_figure` written to ``out_png``."""
    figure = pareto_figure(rows, title)
    figure.savefig(out_png, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(figure)
