"""ToMe: bipartite soft matching inside every block."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..ops import (SCHEDULES, TokenState, bipartite_soft_matching,
                   merge_schedule, merge_with_sizes)
from ..ops.bipartite_matching import count_above, match_tokens, merge_matched
from ..ops.checks import (check_choice, check_cosine, check_counts,
                          check_int, is_int)
from ..ops.packed import packed_cat
from . import costs
from .attention_inputs import AttentionInputs
from .block_stage import BlockReducer, packed_clips
from .costs import Widths
from .registry import register


@register
class ToMe(BlockReducer):
    """Merge ``r`` tokens per block by bipartite soft matching of the keys,
    as ToMe's official patches run it: the prefix tokens are protected
    inside the alternating split, sizes are tracked.

    Args:
        r: tokens merged away per block, or a list with one count per block.
        schedule: with an int ``r``: 'constant', or 'decreasing' (2r in the
            first block down to 0 in the last, the same total).
        protected: leading tokens after the prefix never merged (VideoMAE
            has no prefix).
        threshold: merge only the pairs whose keys are more similar than
            this (cosine, in [-1, 1]), at most ``r`` per block: each clip
            its own count, a batch runs packed (None: always ``r``).
    """

    supports_padding = True

    def __init__(self,
                 r: Union[int, Sequence[int]] = 0,
                 schedule: str = 'constant',
                 protected: int = 0,
                 threshold: Optional[float] = None) -> None:
        super().__init__()
        # Validate now; the per-block counts need the depth (bind).
        check_counts('ToMe r', r)
        check_choice('ToMe schedule', schedule, SCHEDULES)
        check_int('ToMe protected', protected)
        if threshold is not None:
            check_cosine('ToMe threshold', threshold)
        self.r = r if is_int(r) else list(r)
        self.schedule = schedule
        self.protected = protected
        self.threshold = threshold
        self.variable_length = threshold is not None
        self.removals: List[int] = []  # per block, set by bind

    def bind(self, depth: int, prefix: int = 0) -> None:
        super().bind(depth, prefix)
        self.removals = merge_schedule(self.r, depth, self.schedule,
                                       field='ToMe r')

    def requested(self, block_index: int) -> int:
        return self.removals[block_index]

    def patch_capacity(self, patches: int) -> int:
        # Only A tokens (every other unprotected token) merge away.
        return max(patches - self.protected, 0) // 2

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        return costs.matching(tokens, widths.head), True

    def capacity_note(self) -> str:
        if not self.protected:
            return ''
        return (f'protected (ToMe protected={self.protected} keeps that many '
                'leading tokens out of the matching; at most half of the '
                'others merge away)')

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        valid = state.size[..., 0] > 0 if state.padded else None
        merge, r = bipartite_soft_matching(
            attn.metric, r, self.prefix + self.protected, valid,
            self.threshold)
        return merge_with_sizes(merge, x, state)

    def forward_packed(self, x: Tensor, attn: AttentionInputs,
                       state: TokenState,
                       block_index: int) -> Tuple[Tensor, TokenState]:
        """Each clip merged as alone; with a threshold, every clip's count
        read from the device at once: one wait a block, not one a clip."""
        if self.threshold is None or self.requested(block_index) == 0:
            return super().forward_packed(x, attn, state, block_index)
        clips = packed_clips(x, attn, state)
        matchings = [
            match_tokens(inputs.metric,
                         self.removal(block_index, x_i.shape[1]),
                         self.prefix + self.protected)
            for x_i, inputs, _ in clips]
        counts = torch.cat([count_above(m, self.threshold)
                            for m in matchings]).tolist()
        return packed_cat(*zip(*[
            merge_with_sizes(merge_matched(matching, count), x_i, clip_state)
            if matching.r else (x_i, clip_state)
            for (x_i, _, clip_state), matching, count in zip(
                clips, matchings, counts)]))
