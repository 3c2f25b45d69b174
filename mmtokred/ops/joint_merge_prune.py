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
from typing import Tuple

import torch
from torch import Tensor

from .bipartite_matching import merge_into_partners
from .checks import check_cosine
from .cosine import cosine_similarities
from .token_state import TokenState


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
    x, state = merge_into_partners(
        x, state, kept, a.gather(1, leaving),
        partner.gather(1, leaving) + staying.shape[1], merged)
    return x, state, merged
