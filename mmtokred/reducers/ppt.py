"""PPT: per clip, pool (merge) or prune in chosen blocks (Wu et al., 2024)."""
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from ..ops import (TokenState, concentration, keep_tokens, merge_in_rounds,
                   prune)
from ..ops.checks import check_choice, check_number
from . import costs
from .attention_inputs import AttentionInputs
from .costs import Widths
from .registry import register
from .selected_blocks import EVERY_BLOCK, HALF_FLOPS, ImportanceReducer

RULES = ('scale_free', 'paper')
#: The order of the tokens the prune branch keeps: token order, or the
#: official code's (the most important first).
KEPT_ORDERS = ('tokens', 'importance')


@register
class PPT(ImportanceReducer):
    """Token pruning and pooling, chosen per clip by how importance spreads.

    In each chosen block every clip scores its tokens after the prefix
    (importance, summing to 1) and computes a spread statistic. Under
    ``threshold`` (importance spread evenly: duplicated content) it pools:
    ToMe matching with sizes removes ``r`` tokens, the prefix protected (in
    rounds where ``r`` is over half the tokens). Otherwise (importance
    concentrated: inattentive tokens) it prunes the ``r`` least important,
    keeping their content as ``keep_mean`` says. Both remove ``r``, so a
    batch keeps one length.

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
        importance: a name of ``IMPORTANCE`` (the official code's is
            'class_token', for models with a class token).
        keep_mean: what the prune branch does with the pruned tokens.
        rule: 'scale_free' (statistic M^2 var, the squared coefficient of
            variation over M tokens: the same scale for any token count) or
            'paper' (the official unbiased ``torch.var`` of the scores; the
            paper's threshold is 7e-5 on DeiT-S's 196 tokens).
        kept_order: 'tokens' (the kept tokens in token order) or
            'importance' (the most important first, as the official code
            keeps them; with keep_mean='drop').
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
                 kept_order: str = 'tokens',
                 seed: int = 0) -> None:
        super().__init__(blocks, r, importance, keep_mean, seed)
        check_choice('PPT rule', rule, RULES)
        check_choice('PPT kept_order', kept_order, KEPT_ORDERS)
        if kept_order == 'importance' and keep_mean != 'drop':
            raise ValueError("PPT kept_order='importance' keeps the pruned "
                             "tokens' places free: it needs keep_mean='drop', "
                             f'got {keep_mean!r}')
        # Infinity is allowed: every clip pools.
        check_number('PPT threshold', threshold, 0, finite=False)
        self.threshold = threshold
        self.rule = rule
        self.kept_order = kept_order

    def patch_capacity(self, patches: int) -> int:
        return patches - 2  # pooling matches pairs: two stay

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        # Both branches run for every clip: pool (in rounds) and prune.
        return (self.importance_macs(tokens, widths)
                + costs.matching_rounds(tokens, removed, widths.head)
                + costs.nearest(self.keep_mean, tokens, removed,
                                widths.head)), True

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        importance = self.score(x, attn, block_index)
        statistic = (concentration(importance) if self.rule == 'scale_free'
                     else importance.var(dim=1))
        self.observe('statistic', statistic)
        pool = statistic < self.threshold  # (B,)
        self.count('pool', pool.sum())
        self.count('prune', (~pool).sum())

        metric = attn.metric  # computed once for both branches
        pooled, pooled_state = merge_in_rounds(x, metric, state, r,
                                               self.prefix)
        patches, patch_state, join = self.without_prefix(x, state)
        order = importance.argsort(dim=1, descending=True, stable=True)
        keep = patches.shape[1] - r
        if self.kept_order == 'importance':
            pruned, pruned_state = keep_tokens(patches, patch_state,
                                               order[:, :keep])
        else:
            pruned, pruned_state = prune(patches, patch_state, order, keep,
                                         self.keep_mean,
                                         metric[:, self.prefix:])
        pruned, pruned_state = join(pruned, pruned_state)

        def choose(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(pool.view(-1, *[1] * (a.dim() - 1)), a,
                               b.to(a.dtype))

        source = None
        if state.source is not None:
            source = choose(pooled_state.source, pruned_state.source)
        return choose(pooled, pruned), TokenState(
            size=choose(pooled_state.size, pruned_state.sizes_like(pruned)),
            source=source)
