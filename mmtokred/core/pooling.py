"""Pooling of reduced tokens: size-weighted mean or the first token, for
a batch of clips or a packed one."""
from torch import Tensor

from ..ops import TokenState, weighted_mean
from ..ops.packed import first_tokens
from ..ops.token_state import packed_weighted_mean


def mean_pool(x: Tensor, state: TokenState, prefix: int = 0) -> Tensor:
    """``(B, C)`` mean of each clip's tokens after its ``prefix`` ones,
    weighted by size so that every input patch counts once (without sizes,
    ``x[:, prefix:].mean(1)``)."""
    if not prefix:
        return state.pool(x)
    if state.lengths is not None:
        size = state.sizes_like(x).clone()
        starts = first_tokens(state.lengths, x.device)
        for offset in range(prefix):
            size[0, starts + offset] = 0
        return packed_weighted_mean(x, size, state.lengths)
    if state.size is None:
        return x[:, prefix:].mean(1)
    return weighted_mean(x[:, prefix:], state.size[:, prefix:])


def first_token(x: Tensor, state: TokenState) -> Tensor:
    """``(B, C)``: each clip's first token (a class token)."""
    if state.lengths is not None:
        return x[0, first_tokens(state.lengths, x.device)]
    return x[:, 0]
