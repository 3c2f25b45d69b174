"""JMP: joint merging and pruning in chosen blocks (our rule, documented in
:mod:`mmtokred.ops.joint_merge_prune`)."""
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

from ..ops import TokenState, joint_merge_prune
from ..ops.checks import check_cosine
from . import costs
from .attention_inputs import AttentionInputs
from .costs import Widths
from .registry import register
from .selected_blocks import EVERY_BLOCK, HALF_FLOPS, ImportanceReducer


@register
class JMP(ImportanceReducer):
    """Merge the redundant tokens into their ToMe partner; prune only those
    both unimportant and unlike any kept token.

    In each chosen block, per clip, the tokens after the prefix alternate
    into sets A and B and every A token finds its most similar B token (key
    cosine similarity, averaged over heads). The ``r`` A tokens with the
    highest similarity + (1 - importance quantile) leave: merged into their
    partner (size-weighted) when at least ``threshold`` similar, pruned
    otherwise.

    Args:
        blocks: indices of the blocks that reduce (from 0).
        r: tokens removed in each of them, or one count per block (over
            half the tokens: in rounds of at most half).
        threshold: key cosine similarity, in [-1, 1], from which a leaving
            token is merged instead of pruned.
        importance: a name of ``IMPORTANCE`` (see :class:`TokenPruning`).
        seed: of the 'random' score.
    """

    branches = ('merge', 'prune')

    def __init__(self,
                 blocks: Sequence[int] = EVERY_BLOCK,
                 r: Union[int, Sequence[int]] = HALF_FLOPS,
                 threshold: float = 0.5,
                 importance: str = 'pooled_query',
                 seed: int = 0) -> None:
        super().__init__(blocks, r, importance, None, seed)
        check_cosine('JMP threshold', threshold)
        self.threshold = threshold

    def patch_capacity(self, patches: int) -> int:
        return patches - 2  # a merge needs an A and a B token

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        return (self.importance_macs(tokens, widths)
                + costs.matching_rounds(tokens, removed, widths.head)), True

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        importance = self.score(x, attn, block_index)
        x, state, join = self.without_prefix(x, state)
        # Rounds of at most half the tokens, the metric and importance
        # carried along as extra channels (size-weighted like the tokens).
        channels = x.shape[-1]
        packed = torch.cat([x, attn.metric[:, self.prefix:].to(x.dtype),
                            importance[..., None].to(x.dtype)], -1)
        while r > 0:
            step = min(r, packed.shape[1] // 2)
            packed, state, merged = joint_merge_prune(
                packed, packed[..., channels:-1], state, packed[..., -1],
                step, self.threshold)
            self.count('merge', merged.sum())
            self.count('prune', (~merged).sum())
            r -= step
        return join(packed[..., :channels], state)
