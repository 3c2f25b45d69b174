"""How alike neighbouring tubelets of a clip are: what NEPAM's budget
depends on, measured with NEPAM's own window scores
(:func:`mmtokred.ops.window_scores`).

For a window shape, every window of every view gets its score (the mean
distance of its tubelets to its first one, over the normalised pixels). The
distance at which a share ``q`` of the windows would merge is the
``ceil(q * n)``-th smallest of the ``n`` scores: a threshold just above it
merges that share. Each score is also given relative to the view's
distance between random pairs of its tubelets (the same distance, averaged
over ``pairs`` seeded pairs of distinct tubelets), so that clips of other
contrast compare.

The NEPAM threshold that merges a share of the windows
(:func:`merge_threshold`) is the least above the ``ceil(share * n)``-th
smallest score, in NEPAM's own comparison: a window merges when its (fp32)
score is under the threshold.
"""
import math
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from ..ops import tubelet_pixels, window_layout, window_scores
from ..ops.checks import check_choice
from ..table import Column, format_table, key

#: The window shapes (t, h, w) reported, and the shares of windows merged.
WINDOWS = ((2, 1, 1), (1, 1, 2), (1, 2, 2), (2, 2, 2))
QUANTILES = (0.1, 0.25, 0.5, 0.75)
#: Distances with a scale (a cosine's negative similarity has none to
#: compare against).
DISTANCES = ('l1', 'l2')


def share_distance(scores: Tensor, share: float) -> float:
    """The distance at which ``share`` of ``scores`` would merge: the
    ``ceil(share * n)``-th smallest (at least the first)."""
    ordered = scores.flatten().sort().values
    k = max(math.ceil(share * ordered.numel()), 1)
    return float(ordered[k - 1])


def merge_threshold(scores: Tensor, share: float) -> float:
    """NEPAM's ``threshold`` that merges ``share`` (in (0, 1]) of the
    windows whose fp32 ``scores`` are given: under it, the
    ``ceil(share * n)``-th smallest score (at least the first) and every
    smaller one, not one above (ties of that score merge with it: then a
    little more than ``share``).

    It is the shortest decimal that lies above that score and, as a float
    and rounded to fp32, at most the next fp32 value: ``scores < threshold``
    picks the same windows whether torch compares in fp32 or in double.
    """
    if not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ValueError(f'share must be a number in (0, 1], got {share!r}')
    ordered = scores.detach().flatten().float().cpu().sort().values
    if ordered.numel() == 0:
        raise ValueError('no window scores to set a threshold from')
    k = max(math.ceil(share * ordered.numel()), 1)
    kth = ordered[k - 1]
    above = float(torch.nextafter(kth, kth.new_tensor(math.inf)))
    kth = float(kth)
    with localcontext() as exact:
        exact.prec = 1000  # every fp32 and double: exact
        middle = (Decimal(kth) + Decimal(above)) / 2  # rounds to either
        for digits in range(1, 40):
            # The largest decimal of ``digits`` significant digits not above
            # ``above``: if it is above the middle, it rounds to ``above``.
            exponent = Decimal(above).adjusted() - digits + 1
            text = str(Decimal(above).quantize(Decimal(1).scaleb(exponent),
                                               rounding=ROUND_FLOOR))
            value = float(text)
            if Decimal(value) > middle and value <= above:
                return value
    return above


def pair_distances(pixels: Tensor, distance: str, pairs: int = 256,
                   seed: int = 0) -> Tensor:
    """``(V,)`` mean distance between ``pairs`` random pairs of distinct
    tubelets of each view, ``pixels`` ``(V, N, P)``."""
    n = pixels.shape[1]
    if n < 2:
        raise ValueError(f'a view needs two tubelets to pair, it has {n}')
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(n, (pairs, ), generator=generator)
    # A shift in [1, n) makes the second tubelet another one.
    second = (first + torch.randint(1, n, (pairs, ),
                                    generator=generator)) % n
    difference = pixels[:, first] - pixels[:, second]
    per_pair = difference.abs().mean(-1) if distance == 'l1' else \
        difference.square().mean(-1)
    return per_pair.mean(-1)


class Redundancy:
    """Window scores of views, gathered over batches.

    Args:
        tubelet: ``(t, p, p)`` pixels of a token.
        windows: window shapes ``(t, h, w)`` in tubelets.
        distance: 'l1' or 'l2' (NEPAM's over the normalised pixels).
        pairs: random tubelet pairs per view for the relative scale.
    """

    def __init__(self, tubelet: Sequence[int],
                 windows: Sequence[Sequence[int]] = WINDOWS,
                 distance: str = 'l1', pairs: int = 256) -> None:
        check_choice('distance', distance, DISTANCES)
        self.tubelet = tuple(tubelet)
        self.windows = [tuple(w) for w in windows]
        self.distance = distance
        self.pairs = pairs
        self.scores: Dict[tuple, List[Tensor]] = {w: [] for w in self.windows}
        self.relative: Dict[tuple, List[Tensor]] = {
            w: [] for w in self.windows}
        self.views = 0

    def add(self, views: Tensor) -> None:
        """Score normalised views ``(V, C, T, H, W)``."""
        pixels = tubelet_pixels(views.float(), self.tubelet)
        grid = pixels.shape[1:4]
        #: The token grid of the views (T', H', W').
        self.grid = tuple(grid)
        pixels = pixels.flatten(1, 3)
        scale = pair_distances(pixels, self.distance, self.pairs,
                               seed=self.views)
        for window in self.windows:
            members, _ = window_layout(grid, window)
            scores = window_scores(pixels, members, self.distance)
            self.scores[window].append(scores)
            self.relative[window].append(
                scores / scale[:, None].clamp(min=1e-12))
        self.views += len(views)

    def share_distances(self, window: Sequence[int], relative: bool = False,
                        shares: Sequence[float] = QUANTILES) -> List[float]:
        """The distance (or relative distance) at which each share of the
        windows of shape ``window`` would merge, over every view."""
        table = self.relative if relative else self.scores
        scores = torch.cat(table[tuple(window)], 0)
        return [share_distance(scores, share) for share in shares]

    def merged_share(self, window: Sequence[int], threshold: float) -> float:
        """Share of the windows of shape ``window`` scoring under
        ``threshold`` (what NEPAM's threshold mode merges)."""
        scores = torch.cat(self.scores[tuple(window)], 0)
        return float((scores < threshold).float().mean())

    def merge_threshold(self, window: Sequence[int], share: float) -> float:
        """NEPAM's ``threshold`` that merges ``share`` of the windows of
        shape ``window`` over every view (:func:`merge_threshold`; what it
        merges: :meth:`merged_share`)."""
        return merge_threshold(torch.cat(self.scores[tuple(window)], 0),
                               share)

    def windows_per_view(self, window: Sequence[int]) -> int:
        return self.scores[tuple(window)][0].shape[1]


def _share_column(index: int, share: float) -> Column:
    """The cell of a window row at ``share`` merged: absolute / relative."""
    return Column(f'{share:.0%} merged', lambda row: (
        f"{row['absolute'][index]:.3g} / {row['relative'][index]:.2f}"))


def format_report(report: Redundancy, own: str = '') -> str:
    """A table: per window, the absolute and relative distance at which
    10, 25, 50 and 75% of the windows would merge; then ``own`` (what the
    config's NEPAM merges)."""
    rows = [dict(window='x'.join(map(str, window)),
                 windows=report.windows_per_view(window),
                 absolute=report.share_distances(window),
                 relative=report.share_distances(window, relative=True))
            for window in report.windows]
    columns = [Column('window', key('window'), 'left'),
               Column('windows', key('windows'))]
    columns += [_share_column(i, q) for i, q in enumerate(QUANTILES)]
    return format_table(
        columns, rows, rule='',
        title=f'{report.views} views, {report.distance} distance over the '
        'normalised pixels; each cell: absolute / relative to random '
        'tubelet pairs of the view', notes=[own] if own else [])
