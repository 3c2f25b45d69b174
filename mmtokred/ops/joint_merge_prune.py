"""Joint merging and pruning (JMP), our rule; the published one was not.

Per clip, the ``N - r`` most important tokens are critical and kept; each of
the ``r`` others finds its most similar critical token (cosine similarity of
``metric``, e.g. the keys). If that similarity reaches ``threshold`` the token
is merged into it (size-weighted average: its information stays), otherwise
it is pruned (dissimilar to everything that stays: background or noise).
Every clip keeps ``N - r`` tokens, so batches keep one length.
"""
from typing import Optional, Tuple

import torch.nn.functional as F
from torch import Tensor

from .token_state import TokenState


def merge_or_prune(x: Tensor, metric: Tensor, state: TokenState,
                   importance: Tensor, r: int,
                   threshold: float) -> Tuple[Tensor, TokenState, Tensor]:
    """Remove ``r`` tokens of ``x`` ``(B, N, C)``, merging the similar ones.

    Args:
        metric: ``(B, N, D)`` features compared by cosine similarity.
        importance: ``(B, N)``; the ``r`` least important are removed.
        threshold: cosine similarity in [-1, 1] from which a removed token is
            merged rather than pruned.

    Returns:
        The ``N - r`` tokens in their original order, their state, and the
        ``(B, r)`` mask of the removed tokens that were merged.
    """
    n = x.shape[1]
    if not 0 <= r < n:
        raise ValueError(f'r must be in [0, {n - 1}] for {n} tokens, got {r}')
    if not -1 <= threshold <= 1:
        raise ValueError(f'threshold is a cosine similarity in [-1, 1], got '
                         f'{threshold}')
    order = importance.argsort(dim=1, descending=True, stable=True)
    critical = order[:, :n - r].sort(dim=1).values
    minor = order[:, n - r:]

    def take(t: Tensor, index: Tensor) -> Tensor:
        return t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))

    metric = F.normalize(metric, dim=-1)
    similarity = take(metric, minor) @ take(metric, critical).transpose(1, 2)
    best, partner = similarity.max(-1)  # (B, r)
    merged = best >= threshold
    weight = merged[..., None].float()

    size = state.sizes_like(x).float()
    weighted = x * size
    kept = take(weighted, critical).scatter_add(
        1, partner[..., None].expand(-1, -1, x.shape[-1]),
        take(weighted, minor) * weight)
    kept_size = take(size, critical).scatter_add(
        1, partner[..., None], take(size, minor) * weight)
    x = (kept / kept_size.clamp(min=1e-6)).to(x.dtype)

    source: Optional[Tensor] = None
    if state.source is not None:
        source = take(state.source, critical).scatter_reduce(
            1, partner[..., None].expand(-1, -1, state.source.shape[-1]),
            take(state.source, minor) * weight.to(state.source.dtype),
            reduce='amax')
    return x, TokenState(size=kept_size, source=source,
                         padded=state.padded), merged
