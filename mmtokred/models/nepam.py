"""NEPAM: neighbour-patch merging before the first block."""
from typing import Optional, Sequence, Tuple

from mmaction.registry import MODELS
from torch import Tensor, nn

from ..ops import (DISTANCES, POSITIONS, REPRESENTATIVES, TokenState,
                   neighbour_merge)
from ..ops.checks import check_choice, check_window_fits
from .reducers import InputReducer


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
        window = tuple(window)
        if len(window) != 3 or any(
                not isinstance(s, int) or s < 1 for s in window):
            raise ValueError('NEPAM window must be 3 positive integers '
                             f'(t, h, w), got {window}')
        budgets = [b for b in (ratio, num_windows, threshold) if b is not None]
        if len(budgets) != 1:
            raise ValueError('NEPAM needs exactly one of ratio, num_windows '
                             f'and threshold, got {len(budgets)}')
        if ratio is not None and not 0 <= ratio <= 1:
            raise ValueError(f'NEPAM ratio must be in [0, 1], got {ratio}')
        if num_windows is not None and (not isinstance(num_windows, int)
                                        or num_windows < 0):
            raise ValueError('NEPAM num_windows must be an integer >= 0, got '
                             f'{num_windows}')
        if threshold is not None and threshold < 0 and distance != 'cosine':
            raise ValueError(f'NEPAM threshold must be >= 0 for {distance} '
                             f'distances, got {threshold}')
        for name, value, allowed in (('distance', distance, DISTANCES),
                                     ('representative', representative,
                                      REPRESENTATIVES),
                                     ('position', position, POSITIONS)):
            check_choice(f'NEPAM {name}', value, allowed)
        self.window = window
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

    def forward(self, video: Tensor, projection: nn.Conv3d, pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        tubelet = projection.kernel_size
        grid = [n // s for n, s in zip(video.shape[2:], tubelet)]
        num_merged = self.merged_windows(grid)
        if num_merged == 0 and not track_source:
            # Nothing to merge: the dense path, bit for bit.
            tokens = projection(video).flatten(2).transpose(1, 2)
            return tokens + pos_embed, TokenState()
        return neighbour_merge(
            video, projection.weight, projection.bias, pos_embed,
            self.window, num_merged, self.threshold, self.distance,
            self.representative, self.position, track_source)
