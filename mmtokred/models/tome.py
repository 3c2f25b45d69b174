"""ToMe: bipartite soft matching inside every block."""
from typing import List, Sequence, Tuple, Union

from mmaction.registry import MODELS
from torch import Tensor

from ..ops import (TokenState, bipartite_soft_matching, merge_schedule,
                   merge_with_sizes)
from .reducers import AttentionInputs, BlockReducer


@MODELS.register_module()
class ToMe(BlockReducer):
    """Merge ``r`` tokens per block by bipartite soft matching of the keys.

    Args:
        r: tokens merged away per block, or a list with one count per block.
        schedule: with an int ``r``: 'constant', or 'decreasing' (2r in the
            first block down to 0 in the last, the same total).
        protected: leading tokens never merged (VideoMAE has none).
    """

    def __init__(self,
                 r: Union[int, Sequence[int]] = 0,
                 schedule: str = 'constant',
                 protected: int = 0) -> None:
        super().__init__()
        # Validate now; the per-block counts need the depth (bind).
        merge_schedule(r if isinstance(r, int) else list(r),
                       len(r) if not isinstance(r, int) else 1, schedule)
        if not isinstance(protected, int) or protected < 0:
            raise ValueError(
                f'ToMe protected must be an integer >= 0, got {protected}')
        self.r = r if isinstance(r, int) else list(r)
        self.schedule = schedule
        self.protected = protected
        self.removals: List[int] = []  # per block, set by bind

    def bind(self, depth: int) -> None:
        self.removals = merge_schedule(self.r, depth, self.schedule)

    supports_padding = True

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        valid = state.size[..., 0] > 0 if state.padded else None
        merge, r = bipartite_soft_matching(attn.metric,
                                           self.removals[block_index],
                                           self.protected, valid)
        if r == 0:
            return x, state
        return merge_with_sizes(merge, x, state)
