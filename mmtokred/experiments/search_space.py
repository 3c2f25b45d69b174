"""What the calibration search moves: a schedule's shape, and how a shape
and an amount become a ``token_reduction``.

The amount is how much the method removes (as in ``tools/sweep.py``:
NEPAM's ratio for NEPAM alone, else the block stage's share). The shape's
coordinates:

- ``tilt`` in [-2, 2]: the block stage's per-block removal, weighted by
  ``max(0, 1 + tilt * x)`` with x from 1 at the first reducing block to -1
  at the last (positive: more removal early). At 0 it is the method's default
  shape (:data:`~.recipes.BLOCK_REDUCERS`: ToMe the same r in every block,
  the selected-block reducers the same fraction in every block from 1 to
  depth - 2);
- NEPAM's ratio (before a block method) and window (``WINDOWS``);
- the block reducer's threshold (where its recipe has ``threshold_moves``:
  PPT, JMP);
- the backbone's proportional attention.

A block's removal is cut to what it can spend (its recipe's ``most``: ToMe
at most half its tokens, any other block leaving at least ``min_tokens``).
"""
import inspect
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..reducers import REDUCERS
from .recipes import BLOCK_REDUCERS, NEPAM_DEFAULT, spend

#: Methods: NEPAM, a block reducer, or NEPAM followed by one.
METHODS = ('nepam', *BLOCK_REDUCERS,
           *(f'nepam+{name}' for name in BLOCK_REDUCERS))
#: NEPAM windows the search chooses from (t, h, w).
WINDOWS = ((1, 2, 2), (1, 1, 2), (2, 2, 2), (2, 1, 1))
TILT_STEP = 0.25
MAX_TILT = 2.
RATIO_STEP = 0.05


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
                   f'options of {self.reducer.type}' if searched
                   else 'it has no block reducer to take them')
                + f', got {sorted(self.options)}')
        self.blocks = [] if self.reducer is None else \
            self.reducer.placement(self.depth)

    def start(self, proportional_attention: bool = False) -> Shape:
        """The method's default shape: NEPAM's default before a block
        method, no tilt, the reducer's own threshold."""
        ratio = NEPAM_DEFAULT['ratio'] \
            if self.input and self.reducer is not None else 0.
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
        if self.reducer is not None and self.reducer.threshold_moves:
            moves += [(f'threshold {moved:g}', replace(shape,
                                                       threshold=moved))
                      for moved in self.reducer.threshold_moves(
                          self.threshold(shape))]
        switched = not shape.proportional_attention
        moves.append((f"proportional attention {'on' if switched else 'off'}",
                      replace(shape, proportional_attention=switched)))
        return moves

    def threshold(self, shape: Shape) -> float:
        """The block reducer's threshold in ``shape``, else the one of
        ``options``, else its registered default."""
        if shape.threshold is not None:
            return shape.threshold
        return self.options.get('threshold', inspect.signature(
            REDUCERS[self.reducer.type]).parameters['threshold'].default)

    def input_stage(self, shape: Shape, amount: float) -> Optional[Dict]:
        """NEPAM's stage (None: none): at ``amount`` alone, else at the
        shape's ratio before the block reducer."""
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
        base = self.reducer.counts(first_tokens, n, amount)
        positions = np.linspace(1, -1, n) if n > 1 else np.zeros(1)
        weighted = [round(count * max(0., 1 + shape.tilt * x))
                    for count, x in zip(base, positions)]
        return spend(weighted, first_tokens,
                     lambda tokens: self.reducer.most(tokens, min_tokens))

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
                if self.reducer.lists_blocks:
                    options['blocks'] = self.blocks
                reduction['blocks'] = dict(type=self.reducer.type, r=counts,
                                           **options)
        if not reduction:
            return None
        if shape.proportional_attention:
            reduction['proportional_attention'] = True
        return reduction
