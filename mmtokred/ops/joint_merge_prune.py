"""Joint merging and pruning (JMP), our rule; the published one was not.

Partners are found as ToMe finds them: tokens alternate into sets A and B,
and every A token's partner is its most similar B token (cosine similarity
of ``metric``, e.g. the keys). A token leaves when it is redundant or
unimportant: the ``r`` A tokens with the highest ``similarity + (1 -
importance quantile)`` are removed. A removed token is merged into its
partner (size-weighted: its information stays) when their similarity
reaches ``threshold``; otherwise it is both unimportant and unlike any kept
token (background or noise) and is pruned. Every clip keeps ``N - r``
tokens, so batches keep one length.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_cosine
from .cosine import cosine_similarities
from .token_state import TokenState


def _take(t: Tensor, index: Tensor) -> Tensor:
    return t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))


def merge_into_kept(x: Tensor, metric: Tensor, state: TokenState,
                    kept: Tensor,
                    removed: Tensor) -> Tuple[Tensor, TokenState]:
    """Remove the tokens at ``removed`` ``(B, R)``, each merged into its most
    similar token at ``kept`` ``(B, K)`` (cosine similarity of ``metric``
    ``(B, N, D)``), size-weighted.

    Returns:
        The kept tokens in the order of ``kept``, and their state.
    """
    similarity = cosine_similarities(_take(metric, removed),
                                     _take(metric, kept))
    partner = similarity.argmax(-1)  # (B, R)
    return _merge(x, state, kept, removed, partner,
                  torch.ones_like(partner, dtype=torch.bool))


def _merge(x: Tensor, state: TokenState, kept: Tensor, removed: Tensor,
           partner: Tensor, merged: Tensor) -> Tuple[Tensor, TokenState]:
    """Add the ``removed`` tokens flagged ``merged`` into ``kept[partner]``,
    size-weighted; drop the others."""
    weight = merged[..., None].float()
    size = state.sizes_like(x).float()
    weighted = x * size
    total = _take(weighted, kept).scatter_add(
        1, partner[..., None].expand(-1, -1, x.shape[-1]),
        _take(weighted, removed) * weight)
    kept_size = _take(size, kept).scatter_add(1, partner[..., None],
                                              _take(size, removed) * weight)
    source: Optional[Tensor] = None
    if state.source is not None:
        source = _take(state.source, kept).scatter_reduce(
            1, partner[..., None].expand(-1, -1, state.source.shape[-1]),
            _take(state.source, removed) * weight.to(state.source.dtype),
            reduce='amax')
    return (total / kept_size.clamp(min=1e-6)).to(x.dtype), TokenState(
        size=kept_size, source=source, padded=state.padded)


def joint_merge_prune(x: Tensor, metric: Tensor, state: TokenState,
                      importance: Tensor, r: int,
                      threshold: float) -> Tuple[Tensor, TokenState, Tensor]:
    """Remove ``r`` tokens of ``x`` ``(B, N, C)`` by the rule above.

    Args:
        metric: ``(B, N, D)`` features compared by cosine similarity.
        importance: ``(B, N)`` scores, higher for tokens that matter.
        r: tokens to remove, in [0, N // 2] (only A tokens leave).
        threshold: cosine similarity in [-1, 1] from which a removed token is
            merged rather than pruned.

    Returns:
        The ``N - r`` tokens (the A tokens that stay, then the B tokens),
        their state, and the ``(B, r)`` mask of the removed tokens that were
        merged.
    """
    n = x.shape[1]
    if not 0 <= r <= n // 2:
        raise ValueError(f'r must be in [0, {n // 2}] for {n} tokens, got {r}')
    check_cosine('threshold', threshold)
    batch = x.shape[0]
    positions = torch.arange(n, device=x.device).expand(batch, -1)
    a, b = positions[:, ::2], positions[:, 1::2]
    best, partner = cosine_similarities(metric[:, ::2],
                                        metric[:, 1::2]).max(-1)
    # Importance quantile in [0, 1], 1 for the most important token.
    rank = importance.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    quantile = rank[:, ::2].float() / max(n - 1, 1)
    order = (best + 1 - quantile).argsort(dim=1, descending=True, stable=True)
    leaving, staying = order[:, :r], order[:, r:].sort(dim=1).values
    merged = best.gather(1, leaving) >= threshold
    kept = torch.cat([a.gather(1, staying), b], 1)
    # B tokens sit after the staying A tokens in ``kept``.
    x, state = _merge(x, state, kept, a.gather(1, leaving),
                      partner.gather(1, leaving) + staying.shape[1], merged)
    return x, state, merged
