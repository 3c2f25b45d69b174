"""Importance pruning in chosen blocks (EViT's recipe, for a mean readout)."""
from typing import Sequence, Tuple, Union

from torch import Tensor

from ..ops import TokenState, prune
from . import costs
from .attention_inputs import AttentionInputs
from .costs import Widths
from .registry import register
from .selected_blocks import EVERY_BLOCK, HALF_FLOPS, ImportanceReducer


@register
class TokenPruning(ImportanceReducer):
    """Remove the ``r`` least important tokens in each chosen block.

    The baseline the adaptive reducers build on, and the bench on which
    importance scores and the ways of keeping the pooled mean are compared.

    Args:
        blocks: indices of the blocks that prune (from 0); EViT's and PPT's
            3, 6, 9 of 12.
        r: tokens removed in each of them, or one count per block.
        importance: 'received', 'pooled_query', 'norm', 'sharpness',
            'random' (see :mod:`mmtokred.ops.importance`) or 'class_token'
            (PPT's, for models with a class token).
        keep_mean: 'drop', 'fuse' (EViT's fused token, size-weighted) or
            'nearest' (each into its most similar kept token).
        seed: of the 'random' score.
    """

    def __init__(self,
                 blocks: Sequence[int] = EVERY_BLOCK,
                 r: Union[int, Sequence[int]] = HALF_FLOPS,
                 importance: str = 'pooled_query',
                 keep_mean: str = 'nearest',
                 seed: int = 0) -> None:
        super().__init__(blocks, r, importance, keep_mean, seed)

    def patch_capacity(self, patches: int) -> int:
        # One token stays, and with 'fuse' the fused one beside it.
        return patches - (2 if self.keep_mean == 'fuse' else 1)

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        return (self.importance_macs(tokens, widths)
                + costs.nearest(self.keep_mean, tokens, removed,
                                widths.head)), self.keep_mean != 'drop'

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        order = self.score(x, attn, block_index).argsort(
            dim=1, descending=True, stable=True)
        patches, patch_state, join = self.without_prefix(x, state)
        return join(*prune(patches, patch_state, order,
                           patches.shape[1] - r, self.keep_mean,
                           attn.metric[:, self.prefix:]))
