"""Accuracy kept per FLOP saved: every method at a range of FLOPs budgets.

Every method of :mod:`.recipes` has one knob in [0, 1] (how much it
removes); for each FLOPs target (a fraction of dense) the sweep bisects the
knob to the least reduction whose FLOPs are at most the target, counted
from the shapes (:class:`~.costs.Costs`). Everything a method does not vary
comes from its registered defaults, so the sweep measures each method at
its default.

Each point is timed against dense (:meth:`~.costs.Costs.speedups`), then
runs the config's test data set and metric (:func:`~.evaluation.evaluate`)
for every checkpoint: top-1, agreement with the dense model's predictions,
the FLOPs ratio, the measured speedup, the branches adaptive reducers took,
PPT's statistic and the object retention. :mod:`.sweep_table` writes,
reads and prints the rows, :mod:`.pareto_plot` draws them.

A configured point whose tokens depend on each clip (NEPAM's or ToMe's
threshold) has no FLOPs from the shapes: each test view's are counted from
the tokens it kept (the row's ``gflops`` is their mean, the JSON's
``clip_flops`` each clip's ratio: the mean of its views'), and it is not
timed on random views, which would keep every token
(``tools/benchmark.py --batching`` times it on clips that differ).

It says what it does as it goes: a line per phase (the bisection with its
time, the timing with an estimate from a measured unit, decoding), then the
evaluation's progress bar.
"""
import json
import time
import warnings
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.utils import ProgressBar

from .. import checkpoint_fit
from ..console import duration
from .clips import Clips, recogniser
from .costs import Costs, noisy
from .evaluation import actor_masks, evaluate
from .recipes import METHODS, Method, least_knob, resolve

#: The key of dense (no reduction) among the points' reductions.
DENSE = json.dumps(None)


class Point(NamedTuple):
    """A method at a FLOPs target (None: as configured), with its knob and
    the ``token_reduction`` of each model."""
    method: str
    target: Optional[float]
    knob: float
    reductions: List[Optional[Dict]]


def check_sweep(checkpoints: Sequence[str],
                targets: Optional[Sequence[float]], repeats: int) -> None:
    """A clear error for arguments the sweep cannot run with."""
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    if not checkpoints:
        raise ValueError('sweep needs at least one checkpoint')
    for target in targets or ():
        if not 0 < target <= 1:
            raise ValueError(f'FLOPs targets must be in (0, 1], got {target}')


def searched_points(methods: Dict[str, Method],
                    targets: Optional[Sequence[float]], costs: Costs,
                    models: int) -> List[Point]:
    """Each method at each of ``targets`` (or its own): the least knob
    within the target, bisected on the FLOPs counted from the shapes; a
    method without targets at knob 0. A target out of reach is skipped
    with a warning."""
    grid = costs.grid
    started = time.perf_counter()
    searched = 0
    points = []
    for name, method in methods.items():
        if not method.targets:
            points.append(Point(name, None, 0., [
                method.make(0., grid) for _ in range(models)]))
            continue
        for target in targets or method.targets:
            searched += 1
            knob = least_knob(lambda k: costs.gflops(method.make(k, grid)) /
                              costs.dense, target)
            if knob is None:
                warnings.warn(f'{name} cannot reach {target} of the dense '
                              'FLOPs: skipped')
                continue
            points.append(Point(name, target, knob, [
                method.make(knob, grid) for _ in range(models)]))
    if searched:
        print(f'bisected {searched} method x target points to their FLOPs '
              '(counted from the shapes, no forward pass) in '
              f'{duration(time.perf_counter() - started)}', flush=True)
    return points


def configured_points(configs: Sequence[str], models: int) -> List[Point]:
    """The ``model.backbone.token_reduction`` of each config file, named by
    the file; ``{model}`` in a path stands for the checkpoint's index."""
    return [Point(Path(path).stem.replace('{model}', '*'), None, 0., [
        Config.fromfile(path.replace('{model}', str(m))).model.backbone.get(
            'token_reduction') for m in range(models)]) for path in configs]


def measured_costs(points: Sequence[Point], costs: Costs,
                   repeats: int) -> Dict[str, Dict]:
    """Per distinct reduction (by its JSON): ``gflops``, ``speedup`` and
    ``spread`` (all None where its tokens depend on the clip: random views
    tell nothing of what such a budget keeps)."""
    distinct = {json.dumps(r): r for p in points for r in p.reductions}
    gflops = {key: costs.gflops(r) for key, r in distinct.items()}
    timed = {key: r for key, r in distinct.items()
             if gflops[key] is not None}
    speeds = costs.speedups(timed, repeats)  # dense: timed once
    return {key: dict(speeds.get(key, dict(speedup=None, spread=None)),
                      gflops=gflops[key]) for key in distinct}


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 4)


def point_row(model: int, point: Point, result: Dict, cost: Dict,
              dense_gflops: float, reference: List[int],
              clips: int) -> Dict:
    """The sweep's row of ``point`` on ``model``: what :func:`evaluate`
    gave (``result``), its ``cost`` (:func:`measured_costs`; the FLOPs of
    each of the ``clips`` where it has none from the shapes) and its
    agreement with the ``reference`` (dense) predictions."""
    per_clip = cost['gflops'] is None
    gflops = float(np.mean(result['clip_gflops'])) if per_clip else \
        cost['gflops']
    clip_flops = None
    if per_clip:
        clip_flops = [round(float(g) / dense_gflops, 4) for g in np.reshape(
            result['clip_gflops'], (clips, -1)).mean(1)]
    return dict(
        model=model, method=point.method, target=point.target,
        knob=round(point.knob, 4), gflops=gflops,
        flops_ratio=gflops / dense_gflops, speedup=cost['speedup'],
        top1=result['top1'],
        agreement=float(np.mean(np.array(result['predictions']) ==
                                np.array(reference))),
        retention=result['retention'],
        branches=json.dumps(result['branches']),
        statistic=json.dumps(result['statistic']),
        token_reduction=json.dumps(point.reductions[model]),
        speed_spread=_round(cost['spread']), noisy=noisy(cost['spread']),
        clip_flops=clip_flops)


def evaluate_points(cfg: Config, checkpoints: Sequence[str],
                    points: Sequence[Point], costs: Costs,
                    measured: Dict[str, Dict]) -> List[Dict]:
    """Every point on the test clips (decoded once) for each checkpoint,
    dense first: its predictions are the reference of agreement."""
    print("decoding the test clips once, through the config's test "
          'pipeline', flush=True)
    clips = Clips(cfg)
    actor = actor_masks(cfg, clips)
    network = recogniser(cfg)
    print(f'evaluating {len(points)} points x {len(checkpoints)} '
          f'checkpoint{"s" if len(checkpoints) > 1 else ""} on the '
          f'{len(clips)} test clips', flush=True)
    progress = ProgressBar(len(points) * len(checkpoints))
    rows = []
    for model, checkpoint in enumerate(checkpoints):
        checkpoint_fit.load_checkpoint(network, checkpoint,
                                       cfg.get('partial_load'))
        reference = None
        for point in points:
            reduction = point.reductions[model]
            cost = measured[json.dumps(reduction)]
            result = evaluate(network, clips, reduction, actor,
                              costs.flops if cost['gflops'] is None else None)
            if reference is None:
                reference = result['predictions']
            rows.append(point_row(model, point, result, cost,
                                  measured[DENSE]['gflops'], reference,
                                  len(clips)))
            progress.update()
    return rows


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
        One row per checkpoint and point (the CSV's
        :data:`~.sweep_table.COLUMNS`, then ``clip_flops``): model (index
        of the checkpoint), method, target (None: as configured), knob,
        gflops, flops_ratio, speedup, top1, agreement (share of test clips
        predicted as dense predicts them), retention (share of actor
        tubelets held after the last block; None without masks),
        branches, statistic (PPT's 10/50/90th percentiles), the
        token_reduction used, speed_spread (``(max - min) / median`` of the
        point's timed passes, taken in turns with every other point; None
        for one repeat), noisy (speed_spread > ``NOISY_SPREAD``; None for
        one repeat) and clip_flops (each clip's FLOPs ratio where its
        tokens depend on the clip, else None).
    """
    resolved = {spec: resolve(spec) for spec in methods}
    check_sweep(checkpoints, targets, repeats)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    costs = Costs(cfg)
    models = len(checkpoints)
    points = [Point('dense', 1., 0., [None] * models)]
    points += searched_points(resolved, targets, costs, models)
    points += configured_points(configs, models)
    measured = measured_costs(points, costs, repeats)
    return evaluate_points(cfg, checkpoints, points, costs, measured)
