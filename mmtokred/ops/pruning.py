"""Dropping tokens, with the bookkeeping of what they stood for.

A model that mean-pools its last tokens (VideoMAE) reads every token with
weight size/total: a dropped token changes the pooled mean unless its
content survives elsewhere. :func:`prune` offers three ways to remove the
least important tokens:

- 'drop': they are gone, with the patches they stood for;
- 'fuse': they become one extra token holding their size-weighted mean and
  their summed size (EViT's fused token, weighted by size): the sum of
  size x token over all tokens, and so the pooled mean, is unchanged;
- 'nearest': each is merged into its most similar kept token (cosine
  similarity of a metric such as the keys), size-weighted: the pooled mean is
  unchanged too, and the content stays near where it was.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .checks import check_choice
from .bipartite_matching import merge_into_kept
from .token_state import TokenState

KEEP_MEAN = ('drop', 'fuse', 'nearest')


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


def prune(x: Tensor,
          state: TokenState,
          order: Tensor,
          keep: int,
          keep_mean: str = 'drop',
          metric: Optional[Tensor] = None) -> Tuple[Tensor, TokenState]:
    """Keep ``keep`` tokens of ``x`` ``(B, N, C)``: the first of ``order``
    ``(B, N)`` (token indices, the most worth keeping first), removing the
    others as ``keep_mean`` says.

    Kept tokens stay in token order; with 'fuse' the fused token follows
    them (``keep - 1`` kept plus one fused) and its source row is empty: it
    stands for no place. 'nearest' needs ``metric`` ``(B, N, D)``.
    """
    n = x.shape[1]
    check_choice('keep_mean', keep_mean, KEEP_MEAN)
    low = 2 if keep_mean == 'fuse' and n > 1 else 1
    if not low <= keep <= n:
        raise ValueError(f'keep must be in [{low}, {n}] for {n} tokens with '
                         f'keep_mean={keep_mean!r}, got {keep}')
    if keep == n:
        return x, state
    if keep_mean == 'drop':
        return keep_tokens(x, state, order[:, :keep].sort(dim=1).values)
    if keep_mean == 'nearest':
        if metric is None:
            raise ValueError("keep_mean='nearest' needs a metric")
        return merge_into_kept(x, metric, state,
                               order[:, :keep].sort(dim=1).values,
                               order[:, keep:])
    kept_x, kept_state = keep_tokens(x, state,
                                     order[:, :keep - 1].sort(dim=1).values)
    removed = order[:, keep - 1:]
    removed_size = state.sizes_like(x).float().gather(1, removed[..., None])
    removed_x = x.gather(1, removed[..., None].expand(-1, -1, x.shape[-1]))
    total = removed_size.sum(1, keepdim=True)
    fused = ((removed_x * removed_size).sum(1, keepdim=True) /
             total.clamp(min=1e-6)).to(x.dtype)
    kept_size = kept_state.sizes_like(kept_x).to(total.dtype)
    source = None
    if state.source is not None:
        source = torch.cat([kept_state.source,
                            torch.zeros_like(kept_state.source[:, :1])], 1)
    return torch.cat([kept_x, fused], 1), TokenState(
        size=torch.cat([kept_size, total], 1), source=source,
        padded=state.padded)
