"""Block reducers that act in chosen blocks only, removing r tokens there."""
from typing import Dict, Sequence, Union

from ..ops import pooled_query_importance, received_attention_importance
from .reducers import BlockReducer

IMPORTANCE = {
    'pooled_query': pooled_query_importance,
    'attention': received_attention_importance,
}


class SelectedBlocksReducer(BlockReducer):
    """Removes ``r`` tokens in each of the blocks ``blocks`` (from 0).

    Args:
        blocks: indices of the blocks that reduce.
        r: tokens removed in each of them, or one count per block.
    """

    def __init__(self, blocks: Sequence[int],
                 r: Union[int, Sequence[int]]) -> None:
        super().__init__()
        name = type(self).__name__
        blocks = list(blocks)
        if not blocks or len(set(blocks)) != len(blocks) or any(
                not isinstance(b, int) or b < 0 for b in blocks):
            raise ValueError(f'{name} blocks must be distinct block indices '
                             f'>= 0, got {blocks}')
        counts = [r] * len(blocks) if isinstance(r, int) else list(r)
        if len(counts) != len(blocks) or any(
                not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f'{name} r must be an integer >= 0 or one per '
                             f'block of {blocks}, got {r}')
        self.removals: Dict[int, int] = dict(zip(blocks, counts))

    def removal(self, block_index: int, limit: int) -> int:
        """Tokens to remove in block ``block_index``, at most ``limit``."""
        return min(self.removals.get(block_index, 0), limit)

    def bind(self, depth: int) -> None:
        outside = [b for b in self.removals if b >= depth]
        if outside:
            raise ValueError(f'{type(self).__name__} blocks {outside} do not '
                             f'exist: the backbone has blocks 0..{depth - 1}')


def check_importance(name: str, importance: str) -> None:
    if importance not in IMPORTANCE:
        raise ValueError(f'{name} importance must be one of '
                         f'{tuple(IMPORTANCE)}, got {importance!r}')
