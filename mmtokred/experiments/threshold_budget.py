"""NEPAM's threshold for a mean FLOPs target: every clip its own budget.

In threshold mode NEPAM merges every window scoring under the threshold: a
static clip keeps few tokens, a busy one many. The threshold that spends a
mean FLOPs target is read off window scores of calibration clips (pixels
only: no forward pass, and the same for every checkpoint of a config). A
clip that merges ``m`` windows keeps ``N - m (V - 1)`` tokens (``V``
tubelets a window) and costs their closed-form FLOPs
(:meth:`~mmtokred.measure.flops.ShapeFlops.clip_gflops`); the mean over the
clips falls as the threshold rises, and :func:`least_threshold` takes the
least threshold whose mean is at most the target, half-way to the next
score so that held-out clips scoring near a calibration clip fall the same
way.
"""
import math
from typing import Dict, Iterable, Sequence

import torch
from mmengine.config import Config
from torch import Tensor

from ..measure.flops import ShapeFlops
from ..measure.redundancy import DISTANCES, Redundancy
from ..ops import window_layout
from ..ops.checks import check_choice
from .recipes import NEPAM_DEFAULT


def least_threshold(scores: Tensor, costs: Tensor, target: float,
                    windows: str = 'the windows', cost: str = 'cost') -> float:
    """The least threshold under which windows merge such that the mean of
    ``costs[m]`` over the views (``m``: the windows of a view scoring
    under it) is at most ``target``; half-way to the next score.

    Args:
        scores: ``(views, windows)`` window scores.
        costs: ``(windows + 1,)`` cost of a view merging ``m`` windows,
            falling with ``m``.
        windows, cost: what the error calls the windows and the cost.

    Raises:
        ValueError: naming the least mean reachable (every window merged)
            when the target is below it.
    """
    costs = costs.double()
    target += 1e-6  # a mean that rounds to the target (fp32 costs) meets it

    def mean_at(threshold: float) -> float:
        return float(costs[(scores < threshold).sum(1)].mean())

    if float(costs[0]) <= target:
        return 0.  # no score is under 0: no window merges
    values = scores.flatten().unique().double()  # sorted
    above = torch.cat([(values[:-1] + values[1:]) / 2,
                       values[-1:] + values[-1:].abs().clamp(min=1e-6)])
    floor = mean_at(float(above[-1]))
    if floor > target:
        raise ValueError(
            f'{windows} cannot reach a mean {cost} of {target:.4g} on these '
            f'clips: merging every window spends {floor:.3f}; use a larger '
            'window or a block stage')
    low, high = 0, len(above) - 1  # the answer is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if mean_at(float(above[middle])) <= target:
            high = middle
        else:
            low = middle + 1
    return float(above[low])


class ThresholdBudget:
    """FLOPs of NEPAM's threshold mode per clip, from window scores.

    Args:
        model_cfg: the recogniser config (its backbone's shapes).
        window: NEPAM's ``(t, h, w)`` window.
        distance: 'l1' or 'l2' (scores on the normalised pixels).
        proportional_attention: the backbone switch (its bias channel is
            counted).
    """

    def __init__(self, model_cfg: Dict,
                 window: Sequence[int] = tuple(NEPAM_DEFAULT['window']),
                 distance: str = 'l1',
                 proportional_attention: bool = False) -> None:
        check_choice('distance', distance, DISTANCES)
        self.flops = ShapeFlops(model_cfg)
        self.window = tuple(window)
        self.distance = distance
        self.proportional_attention = proportional_attention
        members, _ = window_layout(self.flops.grid, self.window)
        self.windows, volume = members.shape
        tokens = math.prod(self.flops.grid)
        reduction = self.reduction(0.)
        depth = self.flops.depth
        #: ``(windows + 1,)`` FLOPs ratio of a clip merging m windows.
        self.costs = torch.tensor([
            self.flops.clip_gflops(reduction,
                                   [tokens - m * (volume - 1)] * (depth + 1))
            / self.flops.dense for m in range(self.windows + 1)],
            dtype=torch.float64)

    def reduction(self, threshold: float) -> Dict:
        """The backbone's ``token_reduction`` at ``threshold``."""
        reduction = dict(input=dict(type='NEPAM', window=self.window,
                                    ratio=None, distance=self.distance,
                                    threshold=float(threshold)))
        if self.proportional_attention:
            reduction['proportional_attention'] = True
        return reduction

    def scores(self, cfg: Config, batches: Iterable) -> Tensor:
        """``(views, windows)`` scores of the views of ``batches`` (of
        :class:`~.clips.Clips`), normalised by the config's
        ``data_preprocessor`` as the model sees them."""
        from mmaction.registry import MODELS
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
        redundancy = Redundancy(
            (cfg.model.backbone.get('tubelet_size', 2),
             *(2 * [cfg.model.backbone.get('patch_size', 16)])),
            [self.window], self.distance)
        for batch in batches:
            views = preprocessor(batch, training=False)['inputs']
            redundancy.add(views.flatten(0, 1))
        return torch.cat(redundancy.scores[self.window])

    def clip_flops(self, scores: Tensor, threshold: float) -> Tensor:
        """``(views,)`` FLOPs ratio of each view at ``threshold``."""
        return self.costs[(scores < threshold).sum(1)]

    def threshold_for(self, scores: Tensor, target: float) -> float:
        """The least threshold whose mean FLOPs over ``scores``' views is at
        most ``target`` (a ratio of dense in (0, 1]): :func:`least_threshold`
        on the FLOPs of each count of merged windows."""
        if not 0 < target <= 1:
            raise ValueError(f'the FLOPs target must be in (0, 1], got '
                             f'{target}')
        return least_threshold(scores, self.costs, target,
                               f'NEPAM {self.window} windows', 'FLOPs')


def mean_flops(budget: ThresholdBudget, scores: Tensor,
               threshold: float) -> float:
    """Mean FLOPs ratio of the views of ``scores`` at ``threshold``."""
    return float(budget.clip_flops(scores, threshold).mean())
