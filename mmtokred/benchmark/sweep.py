"""Accuracy kept per FLOP saved: every method at a range of FLOPs budgets.

Every method has one knob in [0, 1] (how much it removes: NEPAM's share of
windows merged, ToMe's r per block as a share of half the tokens, the share
the selected-block reducers remove over their blocks, the same fraction in
each, the share pruned at the input); for each FLOPs target (a fraction of
dense) the sweep bisects the knob to the least reduction whose counted
FLOPs are at most the target.
Everything a method does not vary comes from its registered defaults, so
the sweep measures each method at its default.

Each point then runs the config's test data set and metric (MMAction2's
data pipeline and evaluator, the data decoded once and kept in memory)
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

It says what it does as it goes: a line per phase (bisection and timing,
each with an estimate from a measured unit, decoding), then the
evaluation's progress bar.
"""
import ast
import copy
import csv
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint
from mmengine.utils import ProgressBar

from ..models.reducers import SWITCHES
from ..models.selected_blocks import every_block, proportional_blocks
from .flops import count_gflops
from .forward import (forward_fn, interleaved_times, seconds_per_batch,
                      spread)
from .observe import TokenRecorder

#: The main methods, measured at every target; NEPAM followed by an in-block
#: method where NEPAM's default alone is not enough; the others compare one
#: choice (importance score, what pruning keeps, window, rule, placement)
#: at half the FLOPs.
MAIN_TARGETS = (0.7, 0.5, 0.35, 0.25)
COMBINED_TARGETS = (0.35, 0.25)
COMPARE_TARGETS = (0.5, )
#: NEPAM's default (configs/videomae_nepam.py), chosen on the proxy's
#: validation split as the lightest-merging window that keeps >= 98% of
#: the dense predictions (docs/proxy_results.md); the first stage of the
#: combined methods.
NEPAM_DEFAULT = dict(type='NEPAM', window=(1, 2, 2), ratio=0.1)
#: A point whose timed passes spread (``(max - min) / median``) by more than
#: this is marked noisy: its speedup is not to be trusted.
NOISY_SPREAD = 0.2
#: Halvings of the knob's interval when bisecting to a FLOPs target, after
#: one count at the most reduction.
BISECTION_STEPS = 14


def duration(seconds: float) -> str:
    """``seconds`` as a person reads them: tenths under 10 s, minutes from
    two."""
    if seconds < 10:
        return f'{seconds:.1f} s'
    if seconds < 120:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.1f} min'


class Grid(NamedTuple):
    tokens: int
    depth: int


class Method(NamedTuple):
    """``make(knob, grid)`` gives a ``token_reduction``; the knob is in
    [0, 1], more reduction for larger values."""
    make: Callable[[float, Grid], Dict]
    targets: Sequence[float]


def stage_counts(tokens: int, stages: int, removed: float) -> List[int]:
    """Tokens to remove at each of ``stages`` steps so that ``removed`` of
    ``tokens`` is gone, the same fraction at each step; at most all but two
    tokens at a step (what every in-block reducer can remove)."""
    per_stage = (1 - removed)**(1 / stages)
    counts, n = [], tokens
    for _ in range(stages):
        count = min(int(round(n * (1 - per_stage))), max(n - 2, 0))
        counts.append(count)
        n -= count
    return counts


def _nepam(window: Optional[tuple] = None) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        stage = dict(NEPAM_DEFAULT, ratio=knob)
        if window is not None:
            stage['window'] = window
        return dict(input=stage)

    return make


def _tome(knob: float, grid: Grid) -> Dict:
    # r per block up to half the tokens, each block merging what it can (at
    # most half of its tokens): a constant r of tokens / depth would never
    # go below half the FLOPs.
    r, n, counts = int(knob * grid.tokens / 2), grid.tokens, []
    for _ in range(grid.depth):
        counts.append(min(r, n // 2))
        n -= counts[-1]
    return dict(blocks=dict(type='ToMe', r=counts))


def _in_blocks(kind: str, placement: Callable = every_block,
               **options) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        blocks = placement(grid.depth)
        return dict(blocks=dict(type=kind, blocks=blocks,
                                r=stage_counts(grid.tokens, len(blocks),
                                               knob), **options))

    return make


def _patchsim(**options) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        return dict(input=dict(type='PatchSimilarityPruning',
                               ratio=min(knob, 0.99), **options))

    return make


def _after_nepam(blocks: Callable) -> Callable:
    """NEPAM at its default, then ``blocks`` for the rest."""

    def make(knob: float, grid: Grid) -> Dict:
        window = int(np.prod(NEPAM_DEFAULT['window']))
        merged = round(NEPAM_DEFAULT['ratio'] * grid.tokens / window)
        after = Grid(grid.tokens - (window - 1) * merged, grid.depth)
        return dict(input=dict(NEPAM_DEFAULT), **blocks(knob, after))

    return make


def _main(make: Callable) -> Method:
    return Method(make, MAIN_TARGETS)


def _compare(make: Callable) -> Method:
    return Method(make, COMPARE_TARGETS)


METHODS: Dict[str, Method] = {
    # Measured as configured, at its own FLOPs.
    'nepam_default': Method(lambda knob, grid: dict(input=dict(NEPAM_DEFAULT)),
                            ()),
    'nepam': Method(_nepam(), (0.9, 0.85) + MAIN_TARGETS),
    'tome': _main(_tome),
    'ppt': _main(_in_blocks('PPT')),
    'jmp': _main(_in_blocks('JMP')),
    'prune': _main(_in_blocks('TokenPruning')),
    'patchsim': _main(_patchsim()),
    'progressive': _main(_in_blocks('SimilarityPruning')),
    'nepam_tome': Method(_after_nepam(_tome), COMBINED_TARGETS),
    'nepam_ppt': Method(_after_nepam(_in_blocks('PPT')), COMBINED_TARGETS),
    'nepam_jmp': Method(_after_nepam(_in_blocks('JMP')), COMBINED_TARGETS),
    # NEPAM's window.
    'nepam_2x2x2': _compare(_nepam((2, 2, 2))),
    'nepam_2x1x1': _compare(_nepam((2, 1, 1))),
    'nepam_1x1x2': _compare(_nepam((1, 1, 2))),
    # Importance scores against the default ('pooled_query'), on pruning.
    **{f'prune_{score}': _compare(_in_blocks('TokenPruning',
                                             importance=score))
       for score in ('received', 'norm', 'sharpness', 'random')},
    # What pruning does with the pruned tokens, against 'nearest'.
    **{f'prune_{keep}': _compare(_in_blocks('TokenPruning', keep_mean=keep))
       for keep in ('drop', 'fuse')},
    # The random floor of the adaptive methods, and PPT's paper rule.
    'ppt_random': _compare(_in_blocks('PPT', importance='random')),
    'jmp_random': _compare(_in_blocks('JMP', importance='random')),
    'ppt_paper': _compare(_in_blocks('PPT', rule='paper', threshold=7e-5)),
    'ppt_drop': _compare(_in_blocks('PPT', keep_mean='drop')),
    # The official three large steps (blocks 3, 6, 9 of 12, scaled)
    # against the default, a small step in every block from 1 to depth - 2.
    **{f'{name}_official': _compare(_in_blocks(kind, proportional_blocks))
       for name, kind in (('ppt', 'PPT'), ('jmp', 'JMP'),
                          ('prune', 'TokenPruning'),
                          ('progressive', 'SimilarityPruning'))},
    # The diversity rule of patch-similarity pruning against plain.
    'patchsim_plain': _compare(_patchsim(threshold=None)),
    'patchsim_drop': _compare(_patchsim(keep_mean='drop')),
}


def resolve(spec: str) -> Method:
    """A method by name, or ``name:key=value,key=value`` for the method with
    options of its reducer changed (of the in-block stage where it has
    one), e.g. ``ppt:threshold=1.5`` or ``prune:keep_mean='fuse'``; the
    backbone switches (``proportional_attention=True``) too."""
    name, _, options = spec.partition(':')
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r} in {spec!r}; choose from '
                         f'{tuple(METHODS)}')
    method = METHODS[name]
    if not options:
        return method
    overrides = {}
    for option in options.split(','):
        key, equals, value = option.partition('=')
        if not equals:
            raise ValueError(f'method options are key=value, got {option!r} '
                             f'in {spec!r}')
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare name: fuse, nearest, ...

    switches = {k: overrides.pop(k) for k in list(overrides) if k in SWITCHES}

    def make(knob: float, grid: Grid) -> Dict:
        reduction = dict(method.make(knob, grid), **switches)
        stage = 'blocks' if 'blocks' in reduction else 'input'
        reduction[stage] = dict(reduction[stage], **overrides)
        return reduction

    return Method(make, method.targets)


def model_grid(cfg: Config) -> Grid:
    backbone = cfg.model.backbone
    size = backbone.get('img_size', 224) // backbone.get('patch_size', 16)
    frames = backbone.get('num_frames', 16) // backbone.get('tubelet_size', 2)
    return Grid(frames * size * size, backbone.get('depth', 12))


class Costs:
    """FLOPs (counted) and speed (measured) of token reductions on one model
    with random weights: neither depends on the weights."""

    def __init__(self, cfg: Config) -> None:
        backbone = cfg.model.backbone
        shape = (backbone.get('in_channels', 3),
                 backbone.get('num_frames', 16),
                 backbone.get('img_size', 224), backbone.get('img_size', 224))
        self.inputs = torch.randn(8, 1, *shape,
                                  generator=torch.Generator().manual_seed(0))
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.backbone.token_reduction = None
        self.model = MODELS.build(model_cfg).eval()
        self._one_view = forward_fn(self.model, self.inputs[:1], False)
        self.dense = self.gflops(None)

    def gflops(self, reduction: Optional[Dict]) -> float:
        self.model.backbone.set_token_reduction(reduction)
        return count_gflops(self._one_view)

    def knob_for(self, make: Callable[[float], Dict],
                 target: float) -> Optional[float]:
        """The least knob whose FLOPs ratio is at most ``target`` (None if
        even the most reduction stays above it)."""
        if self.gflops(make(1.)) / self.dense > target:
            return None
        low, high = 0., 1.
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            if self.gflops(make(middle)) / self.dense <= target:
                high = middle
            else:
                low = middle
        return high

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


class TestSet:
    """The config's test set through its pipeline, decoded once, with the
    model and evaluator of MMAction2's test loop."""

    def __init__(self, cfg: Config, work_dir: str) -> None:
        cfg = copy.deepcopy(cfg)
        cfg.work_dir = work_dir
        cfg.log_level = 'WARNING'
        cfg.launcher = 'none'
        cfg.load_from = None
        runner = Runner.from_cfg(cfg)
        loop = runner.test_loop
        self.model = runner.model.eval()
        self.evaluator = loop.evaluator
        self.size = len(loop.dataloader.dataset)
        print(f'decoding the {self.size} test clips once, through the '
              "config's test pipeline", flush=True)
        self.batches = list(loop.dataloader)
        self.labels = [int(s.gt_label) for b in self.batches
                       for s in b['data_samples']]
        actor = Path(str(cfg.test_dataloader.dataset.ann_file)).with_suffix(
            '')
        actor = actor.with_name(actor.name + '_actor.npy')
        self.actor = None
        if actor.exists():
            masks = np.load(actor)
            if isinstance(cfg.test_dataloader.dataset.get('indices'), int):
                masks = masks[:self.size]  # the first clips of the list
            if len(masks) != self.size:
                raise ValueError(f'{actor} has {len(masks)} masks for '
                                 f'{self.size} clips of the test list')
            self.actor = torch.from_numpy(masks.reshape(len(masks), -1))

    def load(self, checkpoint: str) -> None:
        load_checkpoint(self.model, checkpoint, map_location='cpu',
                        logger='silent')

    @torch.no_grad()
    def evaluate(self, reduction: Optional[Dict]) -> Dict:
        """Top-1, predictions, retention and what the reducers reported."""
        backbone = self.model.backbone
        track = self.actor is not None and reduction is not None
        backbone.set_token_reduction(
            None if reduction is None else dict(reduction,
                                                track_source=track))
        reducers = [r for r in (backbone.input_reducer,
                                backbone.block_reducer) if r is not None]
        for reducer in reducers:
            reducer.observing = True
        represented: List[torch.Tensor] = []
        predictions: List[int] = []
        recorder = TokenRecorder(backbone)
        for batch in self.batches:
            with recorder:
                outputs = self.model.test_step(batch)
            self.evaluator.process(data_samples=outputs, data_batch=batch)
            predictions += [int(o.pred_score.argmax()) for o in outputs]
            if track:
                source = recorder.final_state.source
                if source.shape[0] != len(outputs):
                    raise ValueError('object retention needs one view per '
                                     'clip (the masks are per clip)')
                represented.append(source.amax(1) > 0)
        metrics = self.evaluator.evaluate(self.size)
        result = dict(top1=float(metrics['acc/top1']),
                      predictions=predictions, retention=None, branches={},
                      statistic=None)
        if self.actor is not None:
            if track:
                held = torch.cat(represented).cpu()
                result['retention'] = int(
                    (held & self.actor).sum()) / int(self.actor.sum())
            else:
                result['retention'] = 1.
        for reducer in reducers:
            result['branches'].update(reducer.branch_counts())
            observed = reducer.observations().get('statistic')
            if observed is not None:
                result['statistic'] = [
                    float(q) for q in torch.quantile(
                        observed.float().cpu(),
                        torch.tensor([0.1, 0.5, 0.9]))]
            reducer.reset_counts()
        return result


def configured_reduction(path: str) -> Optional[Dict]:
    """The ``model.backbone.token_reduction`` a config file sets."""
    return Config.fromfile(path).model.backbone.get('token_reduction')


def sweep(config: str,
          checkpoints: Sequence[str],
          methods: Sequence[str] = tuple(METHODS),
          targets: Optional[Sequence[float]] = None,
          work_dir: str = 'work_dirs/sweep',
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
    if searched:
        started = time.perf_counter()
        costs.gflops(None)  # the unit of the estimate: one count
        count = time.perf_counter() - started
        print(f'bisecting {searched} method x target points to their FLOPs '
              f'(counted on one view with random weights, no data): about '
              f'{duration(searched * (BISECTION_STEPS + 1) * count)}',
              flush=True)
    # (method, target, knob, the token_reduction of each model)
    points = [('dense', 1., 0., [None for _ in models])]
    for method in methods:
        make = resolved[method].make
        if not resolved[method].targets:
            points.append((method, None, 0., [make(0., grid) for _ in models]))
            continue
        for target in targets or resolved[method].targets:
            knob = costs.knob_for(lambda k: make(k, grid), target)
            if knob is None:
                warnings.warn(f'{method} cannot reach {target} of the dense '
                              'FLOPs: skipped')
                continue
            points.append((method, target, knob,
                           [make(knob, grid) for _ in models]))
    for path in configs:
        points.append((Path(path).stem.replace('{model}', '*'), None, 0.,
                       [configured_reduction(path.replace('{model}', str(m)))
                        for m in models]))
    distinct = {json.dumps(r): r for p in points for r in p[3]}
    gflops = {key: costs.gflops(r) for key, r in distinct.items()}
    speeds = costs.speedups(distinct, repeats)  # dense: 'null', timed once

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    test_set = TestSet(cfg, work_dir)
    rows = []
    print(f'evaluating {len(points)} points x {len(checkpoints)} '
          f'checkpoint{"s" if len(checkpoints) > 1 else ""} on the '
          f'{test_set.size} test clips', flush=True)
    progress = ProgressBar(len(points) * len(checkpoints))
    for model, checkpoint in enumerate(checkpoints):
        test_set.load(checkpoint)
        reference = None
        for method, target, knob, reductions in points:
            reduction = reductions[model]
            key = json.dumps(reduction)
            result = test_set.evaluate(reduction)
            if reference is None:
                reference = result['predictions']
            agreement = float(np.mean(
                np.array(result['predictions']) == np.array(reference)))
            rows.append(dict(
                model=model, method=method, target=target,
                knob=round(knob, 4), gflops=gflops[key],
                flops_ratio=gflops[key] / gflops['null'],
                speedup=speeds[key]['speedup'], top1=result['top1'],
                agreement=agreement, retention=result['retention'],
                branches=json.dumps(result['branches']),
                statistic=json.dumps(result['statistic']),
                token_reduction=key,
                speed_spread=_round(speeds[key]['spread']),
                noisy=_noisy(speeds[key]['spread'])))
            progress.update()
    return rows


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def _noisy(value: Optional[float]) -> Optional[bool]:
    return None if value is None else value > NOISY_SPREAD


def write_table(rows: List[Dict], out_prefix: str) -> None:
    """``out_prefix``.csv and .json."""
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    with open(f'{out_prefix}.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
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
        # Rows of sweeps older than the noisy column have no mark.
        mark = marks[first['noisy']] if 'noisy' in first else ' '
        shown.add(mark)
        lines.append(f"{method:<16}{target:>7}"
                     f"{first['flops_ratio']:>7.2f}{first['speedup']:>6.2f}"
                     f"{mark}  "
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
