"""Patch-similarity pruning that keeps a representative of every cluster.

A token's redundancy is its mean cosine similarity to the other tokens. The
most redundant are pruned, but only those with a less redundant token at
least ``threshold`` similar: following such links always reaches a kept
token, so no group of similar tokens is pruned entirely.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_cosine
from .cosine import cosine_similarities


def similarity_prune_index(features: Tensor, r: int,
                           threshold: Optional[float] = None
                           ) -> Tuple[Tensor, Tensor]:
    """Choose ``r`` redundant tokens of ``features`` ``(B, N, C)`` to prune.

    Args:
        r: tokens to prune, in [0, N - 1].
        threshold: cosine similarity a pruned token needs to a less
            redundant token (None: any similarity; the least redundant token
            is always kept).

    Returns:
        ``(B, N)`` token indices, the ``N - r`` kept first (in token order),
        then the ``r`` pruned; and
        ``(B,)`` how many pruned tokens had no such similar token (pruned
        anyway to keep the budget; 0 when the clip had enough).
    """
    batch, n, _ = features.shape
    if not 0 <= r < n:
        raise ValueError(f'r must be in [0, {n - 1}] for {n} tokens, got {r}')
    if threshold is not None:
        check_cosine('threshold', threshold)
    similarity = cosine_similarities(features, features)  # (B, N, N)
    redundancy = (similarity.sum(-1) - similarity.diagonal(
        dim1=1, dim2=2)) / max(n - 1, 1)
    order = redundancy.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(n, device=order.device).expand(batch, -1))
    less_redundant = rank[:, None, :] > rank[:, :, None]
    cover = similarity.masked_fill(~less_redundant, -torch.inf).amax(-1)
    eligible = cover >= (-1. if threshold is None else threshold)
    # Eligible tokens first (redundancy is in [-1, 1]), most redundant first;
    # of equal keys (identical patches) the first in token order: a stable
    # sort, where topk's order of ties is the kernel's (and ONNX's TopK
    # differs from torch's CPU kernel there).
    key = redundancy + 3. * eligible
    pruned = key.argsort(dim=1, descending=True, stable=True)[:, :r]
    keep = torch.ones(batch, n, dtype=torch.bool, device=features.device)
    keep.scatter_(1, pruned, False)
    order = keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)
    fallbacks = (r - eligible.sum(1)).clamp(min=0)
    return order, fallbacks
