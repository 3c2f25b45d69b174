"""PPT: per clip, pool (merge) or prune in chosen blocks (Wu et al., 2024)."""
from typing import Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from torch import Tensor

from ..ops import (TokenState, bipartite_soft_matching, concentration,
                   keep_tokens, merge_with_sizes, most_important)
from .reducers import AttentionInputs
from .selected_blocks import (IMPORTANCE, SelectedBlocksReducer,
                              check_importance)


@MODELS.register_module()
class PPT(SelectedBlocksReducer):
    """Token pruning and pooling, chosen per clip by how attention spreads.

    In each chosen block every clip scores its tokens (importance, summing to
    1) and computes the scale-free concentration M^2 var of the scores. Under
    ``threshold`` (attention spread evenly: duplicated content) it pools: ToMe
    matching with sizes removes ``r`` tokens. Otherwise (attention
    concentrated: inattentive tokens) it prunes the ``r`` least important.
    Both remove ``r``, so a batch keeps one length.

    Args:
        blocks: indices of the blocks that reduce (from 0).
        r: tokens removed in each of them, or one count per block.
        threshold: concentration (M^2 var) under which a clip pools. The
            official 7e-5 on DeiT-S's 196 tokens is 196^2 * 7e-5 = 2.69.
        importance: 'pooled_query' (attention of the mean query times
            ||v||, fused-attention friendly) or 'attention' (attention each
            token receives, from the full matrix).
    """

    branches = ('pool', 'prune')

    def __init__(self,
                 blocks: Sequence[int] = (2, 5, 8),
                 r: Union[int, Sequence[int]] = (500, 400, 300),
                 threshold: float = 2.69,
                 importance: str = 'pooled_query') -> None:
        super().__init__(blocks, r)
        if not threshold >= 0:
            raise ValueError(f'PPT threshold must be >= 0, got {threshold}')
        check_importance('PPT', importance)
        self.threshold = threshold
        self.importance = importance

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        r = self.removal(block_index, x.shape[1] // 2)  # ToMe's cap
        if r == 0:
            return x, state
        importance = IMPORTANCE[self.importance](attn.q, attn.k, attn.v,
                                                 attn.scale, attn.key_bias)
        pool = concentration(importance) < self.threshold  # (B,)
        self.count('pool', pool.sum())
        self.count('prune', (~pool).sum())

        merge, _ = bipartite_soft_matching(attn.metric, r)
        pooled, pooled_state = merge_with_sizes(merge, x, state)
        pruned, pruned_state = keep_tokens(
            x, state, most_important(importance, x.shape[1] - r))
        if pruned_state.size is None:
            pruned_state.size = torch.ones_like(pooled_state.size)

        def choose(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(pool.view(-1, *[1] * (a.dim() - 1)), a, b)

        source = None
        if state.source is not None:
            source = choose(pooled_state.source, pruned_state.source)
        return choose(pooled, pruned), TokenState(
            size=choose(pooled_state.size, pruned_state.size), source=source)
