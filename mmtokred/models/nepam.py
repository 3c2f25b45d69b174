"""NEPAM: neighbour-patch merging before the first block."""
import math
from typing import Optional, Sequence, Tuple

from mmaction.registry import MODELS
from torch import Tensor, nn

from ..ops import (DISTANCES, POSITIONS, REPRESENTATIVES, TokenState,
                   neighbour_merge)
from ..ops.checks import (check_choice, check_int, check_number,
                          check_window_fits, is_int)
from .reducers import InputReducer, grid_of


@MODELS.register_module()
class NEPAM(InputReducer):
    """Merge the most uniform windows of neighbouring tubelets into one token.

    Windows of ``window = (t, h, w)`` tubelets tile the ``(T', H', W')``
    grid (tubelets the window does not divide stay unmerged); each window is
    scored by the mean distance of its tubelets' pixels to its first one, and
    the most uniform windows become one token each. Only surviving tubelets
    are projected. Give exactly one budget:

    Args:
        window: tubelets per window along (time, height, width).
        ratio: merge this fraction of the windows, in [0, 1].
        num_windows: merge this many windows.
        threshold: merge every window scoring under it (token counts then
            differ between clips: the batch is padded and padding masked).
        distance: 'l1', 'l2' or 'cosine' over normalised pixels.
        representative: 'keep1' keeps the first tubelet of a merged window,
            'avg' averages the window's pixels.
        position: position embedding of a merged token, 'representative' or
            'average' over the window.
    """

    def __init__(self,
                 window: Sequence[int] = (2, 2, 2),
                 ratio: Optional[float] = None,
                 num_windows: Optional[int] = None,
                 threshold: Optional[float] = None,
                 distance: str = 'l1',
                 representative: str = 'keep1',
                 position: str = 'representative') -> None:
        super().__init__()
        if not isinstance(window, (list, tuple)) or len(window) != 3 or \
                not all(is_int(s) and s >= 1 for s in window):
            raise ValueError('NEPAM window must be 3 positive integers '
                             f'(t, h, w), got {window!r}')
        budgets = [b for b in (ratio, num_windows, threshold) if b is not None]
        if len(budgets) != 1:
            raise ValueError('NEPAM needs exactly one of ratio, num_windows '
                             f'and threshold, got {len(budgets)}')
        for name, value, allowed in (('distance', distance, DISTANCES),
                                     ('representative', representative,
                                      REPRESENTATIVES),
                                     ('position', position, POSITIONS)):
            check_choice(f'NEPAM {name}', value, allowed)
        if ratio is not None:
            check_number('NEPAM ratio', ratio, 0, 1)
        if num_windows is not None:
            check_int('NEPAM num_windows', num_windows)
        if threshold is not None:
            # Cosine distances (1 - cosine) may be negative; l1, l2 not.
            check_number(f'NEPAM threshold (for {distance} distances)',
                         threshold, -1 if distance.startswith('cosine') else 0)
        self.window = tuple(window)
        self.may_pad = threshold is not None
        self.ratio = ratio
        self.num_windows = num_windows
        self.threshold = threshold
        self.distance = distance
        self.representative = representative
        self.position = position

    def merged_windows(self, grid: Sequence[int]) -> Optional[int]:
        """Windows merged per clip on ``grid`` (None in threshold mode)."""
        check_window_fits('NEPAM window', self.window, grid)
        windows = 1
        for size, limit in zip(self.window, grid):
            windows *= limit // size
        if self.threshold is not None:
            return None
        if self.ratio is not None:
            return round(self.ratio * windows)
        if self.num_windows > windows:
            raise ValueError(
                f'NEPAM num_windows={self.num_windows} exceeds the '
                f'{windows} windows of {self.window} on the grid '
                f'{tuple(grid)}: use at most {windows}')
        return self.num_windows

    def tokens_out(self, grid: Sequence[int]) -> int:
        merged = self.merged_windows(grid)
        volume = self.window[0] * self.window[1] * self.window[2]
        return math.prod(grid) - (merged or 0) * (volume - 1)

    def forward(self, video: Tensor, projection: nn.Conv3d, pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        num_merged = self.merged_windows(grid_of(video, projection))
        if num_merged == 0 and not track_source:
            # Nothing to merge: the dense path, bit for bit.
            tokens = projection(video).flatten(2).transpose(1, 2)
            return tokens + pos_embed, TokenState()
        return neighbour_merge(
            video, projection.weight, projection.bias, pos_embed,
            self.window, num_merged, self.threshold, self.distance,
            self.representative, self.position, track_source)
