"""What token reductions cost on one model: FLOPs and measured speed.

The FLOPs are counted from the shapes
(:class:`~mmtokred.measure.flops.ShapeFlops`, the count of
``tools/benchmark.py`` without a forward pass). The speedup is timed as the
benchmark times it (``forward.seconds_per_batch``, as ``compare`` uses it):
every reduction and dense take turns in each repetition, so a noisy
neighbour slows them alike; a reduction whose timed passes spread by more
than ``NOISY_SPREAD`` of their median is noisy.
"""
import math
import statistics
from typing import Dict, Optional, Tuple

import torch
from mmengine.config import Config
from torch import nn

from ..console import duration
from ..measure.flops import ShapeFlops
from ..measure.forward import (forward_fn, interleaved_times,
                               seconds_per_batch, spread)
from .clips import recogniser
from .recipes import Grid

#: A point whose timed passes spread (``(max - min) / median``) by more than
#: this is marked noisy: its speedup is not to be trusted.
NOISY_SPREAD = 0.2
#: Random views per timed batch.
BATCH = 8


def clip_shape(backbone: nn.Module) -> Tuple[int, int, int, int]:
    """``(C, T, H, W)`` of the clips the backbone was built for."""
    patch = backbone.patch_size
    return (backbone.in_channels, backbone.num_frames,
            backbone.grid_size[0] * patch, backbone.grid_size[1] * patch)


class Costs:
    """FLOPs (from the shapes, :class:`ShapeFlops`) and speed (measured on
    a model with random weights: it does not depend on them) of token
    reductions on one model."""

    def __init__(self, cfg: Config) -> None:
        self.model = recogniser(cfg, device='cpu')
        self.inputs = torch.randn(BATCH, 1, *clip_shape(self.model.backbone),
                                  generator=torch.Generator().manual_seed(0))
        self.flops = ShapeFlops(cfg.model)
        self.dense = self.flops.dense

    @property
    def grid(self) -> Grid:
        """Tokens of the full grid, and blocks."""
        return Grid(math.prod(self.flops.grid), self.flops.depth)

    def gflops(self, reduction: Optional[Dict]) -> Optional[float]:
        """GFLOPs of one view, as ``tools/benchmark.py`` counts them (None
        where each clip keeps its own tokens: counted per clip by
        :func:`~.evaluation.evaluate`)."""
        if self.flops.depends_on_clips(reduction):
            return None
        return self.flops.gflops(reduction)

    def speedups(self, reductions: Dict[str, Optional[Dict]],
                 repeats: int) -> Dict[str, Dict[str, Optional[float]]]:
        """Speed against dense, batches of ``BATCH`` views, the points
        taking turns (:func:`interleaved_times`): per name, ``speedup``
        (median time of dense over the point's) and ``spread`` of the
        point's timed passes (:func:`spread`). Dense is the entry whose
        reduction is None (timed once, so its speedup is 1), added as
        ``'dense'`` if none is. Says how long it will take, from the
        warm-up pass."""
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


def noisy(spread: Optional[float]) -> Optional[bool]:
    """Whether a spread of timed passes is over ``NOISY_SPREAD`` (None: one
    pass, unknown)."""
    return None if spread is None else spread > NOISY_SPREAD
