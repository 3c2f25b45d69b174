"""Budgets chosen by measurement: a reduction schedule for a FLOPs target.

The dense model runs once on a few calibration clips (a seeded sample of a
data set of the config, through the config's one-view validation pipeline)
and its class distributions are kept. The search then looks for the schedule
whose distributions stay closest to them: the least mean KL divergence
KL(dense || reduced) over the clips, agreement of the top class as the
tie-break, among schedules whose FLOPs ratio (what ``tools/benchmark.py``
counts for one view, here from the shapes:
:class:`~mmtokred.measure.flops.ShapeFlops`) is at most the target.

A schedule is a shape and an amount (:mod:`.search_space`). The amount
is bisected for every shape to the least reduction within the target, so
every shape is compared at the target's FLOPs.

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
A target of 1.0 returns no reduction.

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
import json
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from mmengine.config import Config
from mmengine.dist import get_dist_info
from torch import Tensor, nn

from ..console import duration
from ..measure.flops import ShapeFlops
from ..table import Column, format_table, key
from .clips import Clips
from .recipes import least_knob
from .search_space import SearchSpace, Shape

#: The steps of tilt and ratio are halved once when no move helps.
SCALES = (1., 0.5)
MAX_ROUNDS = 20
#: How many standard errors a move must lower the mean KL by.
SIGNIFICANCE = 1.


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

    def neighbours(self, current: Candidate, scale: float, target: float,
                   seen: Set[Shape]) -> List[Candidate]:
        """Every move of ``current`` (steps times ``scale``) to a shape not
        yet ``seen``, at ``target`` and measured; reachable ones only."""
        measured = []
        for move, shape in self.space.moves(current.shape, scale):
            if shape in seen:
                continue
            seen.add(shape)
            candidate = self.at_target(shape, move, target)
            if candidate is not None:
                measured.append(self.measure(candidate))
        return measured

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
            options = self.neighbours(current, scales[0], target, seen)
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
    """One line per candidate: the move, FLOPs ratio, KL, agreement and
    its ``token_reduction``; ``*`` marks the ones taken."""
    return format_table([
        Column('', lambda c: '*' if c['taken'] else '', 'left'),
        Column('move', key('move'), 'left'),
        Column('FLOPs', key('flops_ratio', '.3f')),
        Column('KL', key('kl', '.5f')),
        Column('agree', lambda c: f"{100 * c['agreement']:.1f}%"),
        Column('token_reduction', lambda c: json.dumps(c['reduction']),
               'left'),
    ], [vars(c) for c in tried], rule='')
