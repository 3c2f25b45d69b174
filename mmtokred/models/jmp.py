"""JMP: joint merging and pruning in chosen blocks (our rule, documented in
:mod:`mmtokred.ops.joint_merge_prune`)."""
from typing import Sequence, Tuple, Union

from mmaction.registry import MODELS
from torch import Tensor

from ..ops import TokenState, merge_or_prune
from .reducers import AttentionInputs
from .selected_blocks import (IMPORTANCE, SelectedBlocksReducer,
                              check_importance)


@MODELS.register_module()
class JMP(SelectedBlocksReducer):
    """Keep the important tokens; merge the others into their most similar
    kept token when similar enough, prune them when not.

    In each chosen block, per clip, the ``N - r`` most important tokens
    (importance as in PPT) are critical and stay. Each of the other ``r``
    finds its most similar critical token by cosine similarity of the keys
    (averaged over heads); at ``threshold`` or above it is merged into it
    (size-weighted), below it is pruned.

    Args:
        blocks: indices of the blocks that reduce (from 0).
        r: tokens removed in each of them, or one count per block.
        threshold: key cosine similarity, in [-1, 1], from which a
            non-critical token is merged instead of pruned.
        importance: 'pooled_query' or 'attention' (see PPT).
    """

    branches = ('merge', 'prune')

    def __init__(self,
                 blocks: Sequence[int] = (2, 5, 8),
                 r: Union[int, Sequence[int]] = (500, 400, 300),
                 threshold: float = 0.5,
                 importance: str = 'pooled_query') -> None:
        super().__init__(blocks, r)
        if not -1 <= threshold <= 1:
            raise ValueError('JMP threshold is a cosine similarity in [-1, 1]'
                             f', got {threshold}')
        check_importance('JMP', importance)
        self.threshold = threshold
        self.importance = importance

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        r = self.removal(block_index, x.shape[1] - 1)
        if r == 0:
            return x, state
        importance = IMPORTANCE[self.importance](attn.q, attn.k, attn.v,
                                                 attn.scale, attn.key_bias)
        x, state, merged = merge_or_prune(x, attn.metric, state, importance,
                                          r, self.threshold)
        self.count('merge', merged.sum())
        self.count('prune', (~merged).sum())
        return x, state
