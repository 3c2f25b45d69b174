"""Budgets chosen by measurement: a reduction schedule for a FLOPs target.

The dense model runs once on a few calibration clips (a seeded sample of a
data set of the config, through the config's one-view validation pipeline)
and its class distributions are kept. The search then looks for the schedule
whose distributions stay closest to them: the least mean KL divergence
KL(dense || reduced) over the clips, agreement of the top class as the
tie-break, among schedules whose FLOPs ratio (what ``tools/benchmark.py``
counts for one view, here from the shapes:
:class:`~mmtokred.measure.flops.ShapeFlops`) is at most the target.

A schedule is a shape and an amount. The amount (how much the method
removes, as in ``tools/sweep.py``: NEPAM's ratio for NEPAM alone, else the
block stage's share) is bisected for every shape to the least reduction
within the target, so every shape is compared at the target's FLOPs. The
shape's coordinates:

- ``tilt`` in [-2, 2]: the block stage's per-block removal, weighted by
  ``max(0, 1 + tilt * x)`` with x from 1 at the first reducing block to -1
  at the last (positive: more removal early). At 0 it is the method's default
  shape (ToMe: the same r in every block; the selected-block reducers: the
  same fraction in every block from 1 to depth - 2);
- NEPAM's ratio (before a block method) and window (``WINDOWS``);
- the block reducer's threshold (PPT, JMP);
- the backbone's proportional attention.

The search is a coordinate descent from the method's default shape (the
hand-chosen schedule of ``tools/sweep.py`` at the same FLOPs): each round
measures one step of each coordinate each way (tilt and NEPAM's ratio by
0.25 and 0.05, every other window, PPT's threshold halved and doubled,
JMP's moved by 0.25, proportional attention switched) and moves to the best
if it lowers the mean KL by more than one standard error of the per-clip
differences (:func:`clearly_better`); when no step does, the steps of tilt
and ratio are halved once, then it stops (at most ``MAX_ROUNDS`` rounds).
It reports as it goes: the default shape with the time a candidate takes,
a line per round, and the round it converged in.
A block's removal is cut to what it can spend (ToMe at most half its
tokens, any block leaving at least ``min_tokens``). A target of 1.0
returns no reduction.

Why a shape and not a free count per block: a greedy search over every
block's count (tried first) fitted the noise of 256 clips, with jagged
schedules that lost more top-1 on held-out clips than the default shapes
(docs/calibration.md).

The search is deterministic: clips are a seeded sample, batches are formed
from them in one order whatever the number of processes, and ties keep the
current shape, then the move listed first. Under a distributed launcher
every process evaluates its share of the batches (batch ``j`` on rank
``j % world``) and the per-clip figures are gathered, so every process
takes the same decisions.
"""
import inspect
import json
import math
import os.path as osp
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.dist import get_dist_info
from torch import Tensor, nn

from ..console import duration
from ..measure.flops import ShapeFlops
from .clips import Clips
from .recipes import (BLOCK_REDUCERS, NEPAM_DEFAULT, THRESHOLD_MOVES,
                      every_block, half, least_knob, spend, stage_counts,
                      tome_r)

#: Methods: NEPAM, a block reducer, or NEPAM followed by one.
METHODS = ('nepam', *BLOCK_REDUCERS,
           *(f'nepam+{name}' for name in BLOCK_REDUCERS))
#: NEPAM windows the search chooses from (t, h, w).
WINDOWS = ((1, 2, 2), (1, 1, 2), (2, 2, 2), (2, 1, 1))
TILT_STEP = 0.25
MAX_TILT = 2.
RATIO_STEP = 0.05
#: The steps of tilt and ratio are halved once when no move helps.
SCALES = (1., 0.5)
MAX_ROUNDS = 20
#: How many standard errors a move must lower the mean KL by.
SIGNIFICANCE = 1.


@dataclass(frozen=True)
class Shape:
    """What the search moves; the amount is bisected for each shape."""
    tilt: float = 0.
    window: Tuple[int, int, int] = tuple(NEPAM_DEFAULT['window'])
    #: NEPAM's ratio before a block method (NEPAM alone: the amount).
    ratio: float = 0.
    #: The block reducer's decision threshold (None: its default).
    threshold: Optional[float] = None
    proportional_attention: bool = False


@dataclass
class Candidate:
    """A shape tried, with its amount and what it was measured to do."""
    shape: Shape
    move: str
    amount: float
    flops_ratio: float
    reduction: Optional[Dict]
    kl: float = math.nan
    agreement: float = math.nan
    taken: bool = False
    #: KL of each calibration clip.
    kls: Optional[Tensor] = field(default=None, repr=False)


#: The block reducer's options the search itself sets (a threshold given
#: is where its search starts).
SEARCHED_OPTIONS = ('r', 'blocks')


@dataclass
class SearchSpace:
    """How a method's shape and amount become a ``token_reduction``.

    Args:
        method: one of ``METHODS``.
        depth: blocks of the backbone.
        tokens: tokens of the full grid.
        options: further options of the block reducer (e.g. importance).
    """
    method: str
    depth: int
    tokens: int
    options: Dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f'method must be one of {METHODS}, got '
                             f'{self.method!r}')
        name = self.method.rpartition('+')[2]
        self.input = self.method.startswith('nepam')
        self.reducer = BLOCK_REDUCERS.get(name)
        searched = sorted(set(self.options) & set(SEARCHED_OPTIONS))
        if searched or (self.options and self.reducer is None):
            raise ValueError(
                f'options of {self.method}: '
                + (f'{searched} are what the search sets; give only other '
                   f'options of {self.reducer}' if searched
                   else 'it has no block reducer to take them')
                + f', got {sorted(self.options)}')
        self.blocks = [] if self.reducer is None else (
            list(range(self.depth)) if self.reducer == 'ToMe' else
            every_block(self.depth))

    def start(self, proportional_attention: bool = False) -> Shape:
        """The method's default shape: NEPAM's default before a block
        method, no tilt, the reducer's own threshold."""
        ratio = NEPAM_DEFAULT['ratio'] if self.input and self.reducer else 0.
        return Shape(ratio=ratio,
                     proportional_attention=proportional_attention)

    def moves(self, shape: Shape,
              scale: float = 1.) -> List[Tuple[str, Shape]]:
        """One step of each coordinate each way (tilt and NEPAM's ratio by
        their steps times ``scale``)."""
        moves = []
        if self.reducer is not None:
            for sign in (1, -1):
                tilt = round(shape.tilt + sign * scale * TILT_STEP, 6)
                if -MAX_TILT <= tilt <= MAX_TILT:
                    moves.append((f'tilt {tilt:+g}', replace(shape,
                                                             tilt=tilt)))
        if self.input and self.reducer is not None:
            for sign in (1, -1):
                ratio = round(shape.ratio + sign * scale * RATIO_STEP, 6)
                if 0 <= ratio <= 1:
                    moves.append((f'nepam ratio {ratio:g}',
                                  replace(shape, ratio=ratio)))
        if self.input and (self.reducer is None or shape.ratio > 0):
            moves += [('nepam window {}x{}x{}'.format(*window),
                       replace(shape, window=window))
                      for window in WINDOWS if window != shape.window]
        if self.reducer in THRESHOLD_MOVES:
            value = shape.threshold
            if value is None:
                value = self.options.get('threshold', inspect.signature(
                    MODELS.get(self.reducer)).parameters['threshold'].default)
            moves += [(f'threshold {moved:g}', replace(shape,
                                                       threshold=moved))
                      for moved in THRESHOLD_MOVES[self.reducer](value)]
        switched = not shape.proportional_attention
        moves.append((f"proportional attention {'on' if switched else 'off'}",
                      replace(shape, proportional_attention=switched)))
        return moves

    def input_stage(self, shape: Shape, amount: float) -> Optional[Dict]:
        ratio = amount if self.reducer is None else shape.ratio
        if not self.input or ratio <= 0:
            return None
        return dict(type='NEPAM', window=shape.window, ratio=round(ratio, 6))

    def counts(self, shape: Shape, amount: float, first_tokens: int,
               min_tokens: int) -> List[int]:
        """Tokens each reducing block removes: the default shape's counts
        for ``amount`` weighted by the tilt, each cut to what the block can
        spend when ``first_tokens`` enter the first block."""
        n = len(self.blocks)
        tome = self.reducer == 'ToMe'
        base = [tome_r(first_tokens, amount)] * n if tome else \
            stage_counts(first_tokens, n, amount)
        positions = np.linspace(1, -1, n) if n > 1 else np.zeros(1)
        weighted = [round(count * max(0., 1 + shape.tilt * x))
                    for count, x in zip(base, positions)]
        return spend(weighted, first_tokens, half if tome else
                     lambda tokens: max(tokens - min_tokens, 0))

    def token_reduction(self, shape: Shape, amount: float,
                        first_tokens: int,
                        min_tokens: int) -> Optional[Dict]:
        """The backbone's ``token_reduction`` (None: no reduction)."""
        reduction: Dict = {}
        stage = self.input_stage(shape, amount)
        if stage is not None:
            reduction['input'] = stage
        if self.reducer is not None:
            counts = self.counts(shape, amount, first_tokens, min_tokens)
            if any(counts):
                options = dict(self.options)
                if shape.threshold is not None:
                    options['threshold'] = shape.threshold
                if self.reducer != 'ToMe':
                    options['blocks'] = self.blocks
                reduction['blocks'] = dict(type=self.reducer, r=counts,
                                           **options)
        if not reduction:
            return None
        if shape.proportional_attention:
            reduction['proportional_attention'] = True
        return reduction


class Calibrator:
    """Searches a method's schedule for a FLOPs target on one checkpoint.

    Args:
        cfg: the config to calibrate (its model, data sets and pipelines).
        model: its model with the checkpoint's weights, as
            :func:`~mmtokred.experiments.clips.recogniser` builds it (loaded
            before the clips are decoded: a checkpoint that does not fit
            stops the tool at once).
        space: the method's :class:`SearchSpace`.
        clips: the calibration clips.
        min_tokens: fewest tokens any block may be left with.
    """

    def __init__(self, cfg: Config, model: nn.Module, space: SearchSpace,
                 clips: Clips, min_tokens: int = 8) -> None:
        self.space = space
        self.clips = clips
        self.min_tokens = min_tokens
        self.model = model
        self.flops = ShapeFlops(cfg.model)
        self.dense = clips.class_distributions(self.model)

    def reduction(self, shape: Shape, amount: float) -> Optional[Dict]:
        """``shape`` at ``amount`` as a ``token_reduction``."""
        stage = self.space.input_stage(shape, amount)
        first_tokens = self.flops.tokens(
            None if stage is None else dict(input=stage))[0]
        return self.space.token_reduction(shape, amount, first_tokens,
                                          self.min_tokens)

    def flops_ratio(self, reduction: Optional[Dict]) -> float:
        """Of one view, counted from the shapes."""
        return self.flops.gflops(reduction) / self.flops.dense

    def at_target(self, shape: Shape, move: str,
                  target: float) -> Optional[Candidate]:
        """``shape`` with the least amount whose FLOPs ratio is at most
        ``target`` (None if even the most stays above it)."""
        amount = least_knob(
            lambda a: self.flops_ratio(self.reduction(shape, a)), target)
        if amount is None:
            return None
        reduction = self.reduction(shape, amount)
        return Candidate(shape, move, amount, self.flops_ratio(reduction),
                         reduction)

    def measure(self, candidate: Candidate) -> Candidate:
        """Mean KL from dense and agreement on the calibration clips."""
        backbone = self.model.backbone
        backbone.set_token_reduction(candidate.reduction)
        try:
            reduced = self.clips.class_distributions(self.model)
        finally:
            backbone.set_token_reduction(None)
        candidate.kls = (self.dense.exp() * (self.dense - reduced)).sum(-1)
        candidate.kl = float(candidate.kls.mean())
        candidate.agreement = float(
            (reduced.argmax(-1) == self.dense.argmax(-1)).double().mean())
        return candidate

    def search(self, target: float, proportional_attention: bool = False,
               progress: bool = True) -> Tuple[Candidate, List[Candidate]]:
        """The schedule for ``target`` (a FLOPs ratio in (0, 1]) and every
        candidate measured, in order; ``progress``: report each round (on
        the first process)."""
        if not 0 < target <= 1:
            raise ValueError(f'the FLOPs target must be in (0, 1], got '
                             f'{target}')
        if target == 1:
            none = self.measure(Candidate(Shape(), 'no reduction', 0., 1.,
                                          None, taken=True))
            return none, [none]

        def report(line: str) -> None:
            if progress and get_dist_info()[0] == 0:
                print(line, flush=True)

        started = time.perf_counter()
        start = self.space.start(proportional_attention)
        moves = len(self.space.moves(start))
        report(f'search: each round tries {moves} moves (a step of each '
               'coordinate each way), each bisected to the target and run '
               f'on the {len(self.clips)} clips; it ends when none helps, '
               f'after at most {MAX_ROUNDS} rounds')
        current = self.at_target(start, 'default shape', target)
        if current is None:
            raise ValueError(
                f'{self.space.method} cannot reach {target} of the dense '
                'FLOPs even at its most reduction; choose another method')
        current.taken = True
        tried = [self.measure(current)]
        seen = {start}
        # The default shape is a candidate like any: the unit of the
        # estimate (the moves of a round are as many, give or take one).
        unit = time.perf_counter() - started
        report(f'default shape: {_figures(current)} ({duration(unit)} a '
               f'candidate: about {duration(moves * unit)} a round)')
        scales = list(SCALES)
        for round_ in range(1, MAX_ROUNDS + 1):
            began = time.perf_counter()
            options = []
            for move, shape in self.space.moves(current.shape, scales[0]):
                if shape in seen:
                    continue
                seen.add(shape)
                candidate = self.at_target(shape, move, target)
                if candidate is not None:
                    options.append(self.measure(candidate))
            tried += options
            best = min(options, default=current,
                       key=lambda c: (c.kl, -c.agreement))
            head = (f'round {round_} (at most {MAX_ROUNDS}): '
                    f'{len(options)} moves in '
                    f'{duration(time.perf_counter() - began)}; ')
            if clearly_better(best, current):
                report(head + f'took {best.move}: {_figures(best)} (KL '
                       f'was {current.kl:.4g})')
                best.taken = True
                current = best
            elif len(scales) > 1:
                report(head + 'none clearly better: halving the steps of '
                       'tilt and ratio')
                scales.pop(0)  # finer steps
            else:
                report(head + 'none clearly better')
                report(f'converged after {round_} rounds: {len(tried)} '
                       'candidates in '
                       f'{duration(time.perf_counter() - started)}')
                break
        else:
            report(f'stopped at the limit of {MAX_ROUNDS} rounds, not '
                   f'converged: {len(tried)} candidates in '
                   f'{duration(time.perf_counter() - started)}')
        return current, tried


def _figures(candidate: Candidate) -> str:
    # KL in significant figures: near dense it is far below 1e-5.
    return (f'FLOPs {candidate.flops_ratio:.3f}, KL {candidate.kl:.4g}, '
            f'agreement {100 * candidate.agreement:.1f}%')


def clearly_better(candidate: Candidate, current: Candidate) -> bool:
    """Whether ``candidate`` lowers the mean KL by more than
    ``SIGNIFICANCE`` standard errors of the per-clip differences: smaller
    gains are as likely the noise of the sample of clips, and chasing them
    made schedules that lost more on held-out clips (docs/calibration.md).
    """
    if candidate is current:
        return False
    gain = current.kls - candidate.kls
    if len(gain) < 2:
        return float(gain.mean()) > 0
    error = float(gain.std()) / math.sqrt(len(gain))
    return float(gain.mean()) > SIGNIFICANCE * error


def format_candidates(tried: Sequence[Candidate]) -> str:
    """One line per candidate: the move, FLOPs ratio, KL, agreement; ``*``
    marks the ones taken."""
    lines = [f"{'':2}{'move':<28}{'FLOPs':>7}{'KL':>10}{'agree':>8}  "
             'token_reduction']
    for c in tried:
        lines.append(f"{'*' if c.taken else '':2}{c.move:<28}"
                     f'{c.flops_ratio:>7.3f}{c.kl:>10.5f}'
                     f'{100 * c.agreement:>7.1f}%  {json.dumps(c.reduction)}')
    return '\n'.join(lines)


def calibrated_config(base: str, reduction: Optional[Dict],
                      base_has_reduction: bool, notes: Sequence[str]) -> str:
    """The text of a config that inherits ``base`` (by its absolute path:
    the written file can be moved) and changes only
    ``model.backbone.token_reduction`` (replaced whole: ``_delete_`` where
    the base sets one)."""
    if reduction is None:
        value = 'None'
    else:
        reduction = dict(reduction)
        if base_has_reduction:
            reduction = dict(_delete_=True, **reduction)
        value = _python(reduction, 12)
    lines = [f'# {note}' for note in notes]
    lines += [f'_base_ = {osp.abspath(base)!r}', '',
              'model = dict(', '    backbone=dict(',
              f'        token_reduction={value}))', '']
    return '\n'.join(lines)


def _python(value, indent: int) -> str:
    """``value`` as Python source, dicts written ``dict(...)``."""
    if isinstance(value, dict):
        pad = ' ' * indent
        items = [f'{pad}{k}={_python(v, indent + 4)}'
                 for k, v in value.items()]
        return 'dict(\n' + ',\n'.join(items) + ')'
    if isinstance(value, (list, tuple)):
        return '(' + ', '.join(_python(v, indent) for v in value) + (
            ',)' if len(value) == 1 else ')')
    return repr(value)
