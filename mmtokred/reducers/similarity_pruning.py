"""Patch-similarity pruning, at the input or progressively in the blocks."""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..ops import TokenState, prune, similarity_prune_index
from ..ops.checks import check_choice, check_cosine, check_number
from . import costs
from .attention_inputs import AttentionInputs
from .costs import Widths
from .input_stage import InputReducer, embed, grid_of
from .registry import register
from .selected_blocks import (EVERY_BLOCK, HALF_FLOPS,
                              SelectedBlocksReducer)

#: What happens to the pruned tokens: see :func:`mmtokred.ops.prune`
#: ('fuse' is left out: one token of everything pruned says little here).
KEEP_MEAN = ('drop', 'nearest')


def _check(name: str, threshold: Optional[float], keep_mean: str) -> None:
    if threshold is not None:
        check_cosine(f'{name} threshold', threshold)
    check_choice(f'{name} keep_mean', keep_mean, KEEP_MEAN)


@register
class PatchSimilarityPruning(InputReducer):
    """Prune the most redundant patches right after the patch projection.

    Redundancy is a patch embedding's mean cosine similarity to the other
    patches of the clip; the most redundant ``ratio`` of the patches are
    pruned, each only if a less redundant patch at least ``threshold``
    similar stays, so every cluster of similar patches keeps one (the
    diversity rule; how often it had to be broken to keep the budget is
    counted as 'fallback').

    Args:
        ratio: fraction of the patches pruned, in [0, 1).
        threshold: cosine similarity to a kept, less redundant patch that
            pruning requires (None: plain most-redundant pruning).
        keep_mean: 'drop' the pruned patches, or merge each into its 'nearest'
            kept patch (size-weighted: the pooled mean keeps its content).
    """

    #: 'fallback': pruned patches that had no similar, less redundant patch
    #: (taken to keep the budget).
    branches = ('fallback', )

    def __init__(self, ratio: float = 0.4,
                 threshold: Optional[float] = 0.5,
                 keep_mean: str = 'nearest') -> None:
        super().__init__()
        check_number('PatchSimilarityPruning ratio', ratio, 0, 1,
                     high_open=True)
        _check('PatchSimilarityPruning', threshold, keep_mean)
        self.ratio = ratio
        self.threshold = threshold
        self.keep_mean = keep_mean

    def tokens_out(self, grid: Sequence[int]) -> int:
        n = math.prod(grid)
        pruned = round(self.ratio * n)
        if pruned >= n:
            raise ValueError(
                f'PatchSimilarityPruning ratio={self.ratio} prunes all {n} '
                f'tokens of the grid {tuple(grid)}; one must stay: use a '
                f'ratio under {(n - 0.5) / n:.4f}')
        return n - pruned

    def macs(self, grid: Sequence[int], tokens: int, track_source: bool,
             widths: Widths) -> Tuple[int, int, bool]:
        # Every patch is projected; where some are pruned, the embeddings'
        # similarities, then 'nearest'.
        n = math.prod(grid)
        if tokens == n:
            return n, 0, False
        return n, (costs.similarities(n, widths.embed)
                   + costs.nearest(self.keep_mean, n, n - tokens,
                                   widths.embed)), self.keep_mean == 'nearest'

    def forward(self, pixels: Tensor, projection: nn.Module,
                pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        embeddings = embed(pixels, projection)
        tokens = embeddings + pos_embed[:, -embeddings.shape[1]:]
        batch, n, _ = tokens.shape
        state = TokenState()
        if track_source:
            state.source = torch.eye(n, device=tokens.device,
                                     dtype=tokens.dtype).expand(batch, -1, -1)
        r = n - self.tokens_out(grid_of(pixels, projection))
        if r == 0:
            return tokens, state
        # Similarity of content: the embeddings without position.
        order, fallbacks = similarity_prune_index(embeddings, r,
                                                  self.threshold)
        self.count('fallback', fallbacks.sum())
        return prune(tokens, state, order, n - r, self.keep_mean, embeddings)


@register
class SimilarityPruning(SelectedBlocksReducer):
    """Patch-similarity pruning in chosen blocks (progressive), on the
    tokens after the attention residual (the prefix never pruned).

    Args:
        blocks: indices of the blocks that prune (from 0).
        r: tokens pruned in each of them, or one count per block.
        threshold, keep_mean: as for :class:`PatchSimilarityPruning`.
    """

    branches = ('fallback', )

    def __init__(self,
                 blocks: Sequence[int] = EVERY_BLOCK,
                 r: Union[int, Sequence[int]] = HALF_FLOPS,
                 threshold: Optional[float] = 0.5,
                 keep_mean: str = 'nearest') -> None:
        super().__init__(blocks, r)
        _check('SimilarityPruning', threshold, keep_mean)
        self.threshold = threshold
        self.keep_mean = keep_mean

    def patch_capacity(self, patches: int) -> int:
        return patches - 1  # the least redundant token stays

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        return (costs.similarities(tokens, widths.embed)
                + costs.nearest(self.keep_mean, tokens, removed,
                                widths.embed)), self.keep_mean != 'drop'

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        x, state, join = self.without_prefix(x, state)
        order, fallbacks = similarity_prune_index(x, r, self.threshold)
        self.count('fallback', fallbacks.sum())
        return join(*prune(x, state, order, x.shape[1] - r, self.keep_mean,
                           x))
