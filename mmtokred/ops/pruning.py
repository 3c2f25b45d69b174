"""Dropping tokens, with the bookkeeping of what they stood for."""
from typing import Tuple

from torch import Tensor

from .token_state import TokenState


def keep_tokens(x: Tensor, state: TokenState,
                index: Tensor) -> Tuple[Tensor, TokenState]:
    """Keep the tokens at ``index`` ``(B, K)`` of ``x`` ``(B, N, C)``.

    The others are dropped with the patches they stood for: sizes and
    sources of the kept tokens are unchanged.
    """
    x = x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))
    size = state.size
    if size is not None:
        size = size.gather(1, index[..., None])
    source = state.source
    if source is not None:
        source = source.gather(
            1, index[..., None].expand(-1, -1, source.shape[-1]))
    return x, TokenState(size=size, source=source, padded=state.padded)


def most_important(importance: Tensor, keep: int) -> Tensor:
    """``(B, keep)`` indices of the most important tokens, in token order."""
    return importance.topk(keep, dim=1).indices.sort(dim=1).values
