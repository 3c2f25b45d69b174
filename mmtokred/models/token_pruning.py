"""Importance pruning in chosen blocks (EViT's recipe, for a mean readout)."""
from typing import Sequence, Tuple, Union

from mmaction.registry import MODELS
from torch import Tensor

from ..ops import TokenState, prune
from .reducers import AttentionInputs
from .selected_blocks import EVERY_BLOCK, HALF_FLOPS, ImportanceReducer


@MODELS.register_module()
class TokenPruning(ImportanceReducer):
    """Remove the ``r`` least important tokens in each chosen block.

    The baseline the adaptive reducers build on, and the bench on which
    importance scores and the ways of keeping the pooled mean are compared.

    Args:
        blocks: indices of the blocks that prune (from 0); EViT's and PPT's
            3, 6, 9 of 12.
        r: tokens removed in each of them, or one count per block.
        importance: 'received', 'pooled_query', 'norm', 'sharpness' or
            'random' (see :mod:`mmtokred.ops.importance`).
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

    def capacity(self, block_index: int, tokens: int) -> int:
        # One token stays, and with 'fuse' the fused one beside it.
        return max(tokens - (2 if self.keep_mean == 'fuse' else 1), 0)

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        r = self.removal(block_index, x.shape[1])
        if r == 0:
            return x, state
        order = self.score(x, attn, block_index).argsort(
            dim=1, descending=True, stable=True)
        return prune(x, state, order, x.shape[1] - r, self.keep_mean,
                     attn.metric)
