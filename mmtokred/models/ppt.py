"""PPT: per clip, pool (merge) or prune in chosen blocks (Wu et al., 2024)."""
from typing import Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from torch import Tensor

from ..ops import TokenState, concentration, merge_in_rounds, prune
from ..ops.checks import check_choice, check_number
from .reducers import AttentionInputs
from .selected_blocks import EVERY_BLOCK, HALF_FLOPS, ImportanceReducer

RULES = ('scale_free', 'paper')


@MODELS.register_module()
class PPT(ImportanceReducer):
    """Token pruning and pooling, chosen per clip by how importance spreads.

    In each chosen block every clip scores its tokens (importance, summing to
    1) and computes a spread statistic. Under ``threshold`` (importance
    spread evenly: duplicated content) it pools: ToMe matching with sizes
    removes ``r`` tokens (in rounds where ``r`` is over half the tokens).
    Otherwise (importance concentrated: inattentive tokens) it prunes the
    ``r`` least important, keeping their content as ``keep_mean`` says.
    Both remove ``r``, so a batch keeps one length.

    The statistic of each clip and block is observed as 'statistic' (see
    ``Reducer.observations``), so tools can show its distribution.

    Args:
        blocks: indices of the blocks that reduce (from 0); by default every
            block from 1 to 10 (the paper's 3, 6, 9 of 12 lost more on the
            proxy).
        r: tokens removed in each of them, or one count per block.
        threshold: statistic under which a clip pools. The default 1.0 was
            calibrated on 500 training clips of the proxy (best top-1 of
            0, 1, 2, 4, 8 and infinity at half the FLOPs).
        importance: see :class:`~mmtokred.models.TokenPruning`.
        keep_mean: what the prune branch does with the pruned tokens.
        rule: 'scale_free' (statistic M^2 var, the squared coefficient of
            variation over M tokens: the same scale for any token count) or
            'paper' (the official unbiased ``torch.var`` of the scores; the
            paper's threshold is 7e-5 on DeiT-S's 196 tokens).
        seed: of the 'random' score.
    """

    branches = ('pool', 'prune')

    def __init__(self,
                 blocks: Sequence[int] = EVERY_BLOCK,
                 r: Union[int, Sequence[int]] = HALF_FLOPS,
                 threshold: float = 1.0,
                 importance: str = 'pooled_query',
                 keep_mean: str = 'nearest',
                 rule: str = 'scale_free',
                 seed: int = 0) -> None:
        super().__init__(blocks, r, importance, keep_mean, seed)
        check_choice('PPT rule', rule, RULES)
        # Infinity is allowed: every clip pools.
        check_number('PPT threshold', threshold, 0, finite=False)
        self.threshold = threshold
        self.rule = rule

    def capacity(self, block_index: int, tokens: int) -> int:
        return max(tokens - 2, 0)  # pooling matches pairs: two stay

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        r = self.removal(block_index, x.shape[1])
        if r == 0:
            return x, state
        importance = self.score(x, attn, block_index)
        statistic = (concentration(importance) if self.rule == 'scale_free'
                     else importance.var(dim=1))
        self.observe('statistic', statistic)
        pool = statistic < self.threshold  # (B,)
        self.count('pool', pool.sum())
        self.count('prune', (~pool).sum())

        metric = attn.metric  # computed once for both branches
        pooled, pooled_state = merge_in_rounds(x, metric, state, r)
        order = importance.argsort(dim=1, descending=True, stable=True)
        pruned, pruned_state = prune(x, state, order, x.shape[1] - r,
                                     self.keep_mean, metric)
        if pruned_state.size is None:
            pruned_state.size = torch.ones_like(pooled_state.size)

        def choose(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(pool.view(-1, *[1] * (a.dim() - 1)), a,
                               b.to(a.dtype))

        source = None
        if state.source is not None:
            source = choose(pooled_state.source, pruned_state.source)
        return choose(pooled, pruned), TokenState(
            size=choose(pooled_state.size, pruned_state.size), source=source)
