"""NEPAM: neighbour-patch merging before the first block."""
import math
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import (DISTANCES, POSITIONS, REPRESENTATIVES, TokenState,
                   neighbour_merge)
from ..ops.checks import (check_choice, check_int, check_number,
                          check_window_fits, is_int)
from .costs import Widths
from .input_stage import InputReducer, embed, grid_of, projection_weight
from .registry import register


@register
class NEPAM(InputReducer):
    """Merge the most uniform windows of neighbouring patches into one token.

    Windows of ``window = (t, h, w)`` tubelets (images: ``(h, w)``
    patches) tile the token grid (patches the window does not divide stay
    unmerged); each window is scored by the mean distance of its patches'
    pixels to its first one, and the most uniform windows become one token
    each. Only surviving patches are projected. Give exactly one budget:

    Args:
        window: patches per window along (time, height, width), or along
            (height, width) with one frame.
        ratio: merge this fraction of the windows, in [0, 1].
        num_windows: merge this many windows.
        threshold: merge every window scoring under it (token counts then
            differ between clips: the batch is padded and padding masked).
        distance: 'l1', 'l2' or 'cosine' over normalised pixels (NEPAM's
            official 'manhattan', 'euclidean' and 'cosine'; cosine is its
            ``CosSim``, minus the cosine similarity).
        representative: 'keep1' keeps patch ``keep`` of a merged window,
            'avg' averages the window's pixels.
        position: position embedding of a merged token, 'representative' or
            'average' over the window.
        keep: which patch of a window (in (t, h, w) order) stands for it
            (the official DeiT-S setting keeps the second of 1x2).
    """

    def __init__(self,
                 window: Sequence[int] = (2, 2, 2),
                 ratio: Optional[float] = None,
                 num_windows: Optional[int] = None,
                 threshold: Optional[float] = None,
                 distance: str = 'l1',
                 representative: str = 'keep1',
                 position: str = 'representative',
                 keep: int = 0) -> None:
        super().__init__()
        if not isinstance(window, (list, tuple)) or \
                len(window) not in (2, 3) or \
                not all(is_int(s) and s >= 1 for s in window):
            raise ValueError('NEPAM window must be 3 positive integers '
                             '(t, h, w), or 2 (h, w) for one frame, got '
                             f'{window!r}')
        budgets = {name: value for name, value in (
            ('ratio', ratio), ('num_windows', num_windows),
            ('threshold', threshold)) if value is not None}
        if len(budgets) != 1:
            given = ', '.join(f'{k}={v!r}' for k, v in budgets.items())
            raise ValueError(
                'NEPAM needs exactly one of ratio, num_windows and threshold, '
                f'got {given or "none"}' + (
                    '; set the others to None (a config that sets one, '
                    'switched on the command line: --cfg-options '
                    'model.backbone.token_reduction.input.threshold=0.1 '
                    'model.backbone.token_reduction.input.ratio=None)'
                    if len(budgets) > 1 else ''))
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
            # Cosine distances (minus the cosine) may be negative; l1, l2
            # not.
            check_number(f'NEPAM threshold (for {distance} distances)',
                         threshold, -1 if distance == 'cosine' else 0)
        self.window = tuple(window) if len(window) == 3 else (1, *window)
        check_int('NEPAM keep', keep, 0, math.prod(self.window) - 1)
        self.may_pad = threshold is not None
        self.ratio = ratio
        self.num_windows = num_windows
        self.threshold = threshold
        self.distance = distance
        self.representative = representative
        self.position = position
        self.keep = keep

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
        return math.prod(grid) - (merged or 0) * (math.prod(self.window) - 1)

    def macs(self, grid: Sequence[int], tokens: int, track_source: bool,
             widths: Widths) -> Tuple[int, int, bool]:
        # Only the surviving patches are projected; the window distances
        # are elementwise. In threshold mode ``tokens`` is what one clip
        # kept (ShapeFlops.clip_gflops), and its tokens always carry sizes.
        if self.threshold is not None:
            return tokens, 0, True
        return tokens, 0, self.merged_windows(grid) > 0 or track_source

    def forward(self, pixels: Tensor, projection: nn.Module,
                pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        grid = grid_of(pixels, projection)
        num_merged = self.merged_windows(grid)
        pos_embed = pos_embed[:, -math.prod(grid):]
        if num_merged == 0 and not track_source:
            # Nothing to merge: the dense path, bit for bit.
            return embed(pixels, projection) + pos_embed, TokenState()
        return neighbour_merge(
            pixels, projection_weight(projection), projection.bias,
            pos_embed, self.window, num_merged, self.threshold,
            self.distance, self.representative, self.position, track_source,
            self.keep, self.packs)
