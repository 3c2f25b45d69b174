"""ToMe's bipartite soft matching and size-weighted merging (Bolya et al.,
ICLR 2023), for tokens without a class token unless told otherwise; and
the size-weighted merging of chosen tokens into chosen partners that
pruning and JMP use (:func:`merge_into_kept`, :func:`merge_into_partners`).
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .cosine import cosine_similarities
from .token_state import TokenState

Merge = Callable[[Tensor, str], Tensor]


class Matching(NamedTuple):
    """Every A token's most similar B token (:func:`match_tokens`)."""
    node_max: Tensor  #: (B, N_A) cosine similarity of the best partner
    node_idx: Tensor  #: (B, N_A) index of the best partner among B tokens
    r: int  #: the most tokens that may merge away (the capped request)
    protected: int  #: leading tokens that never merge


def match_tokens(metric: Tensor,
                 r: int,
                 protected: int = 0,
                 valid: Optional[Tensor] = None) -> Matching:
    """Find every A token's most similar B token.

    Tokens alternate into sets A (even positions) and B (odd positions);
    similarity is the cosine of ``metric`` ``(B, N, D)``. The first
    ``protected`` tokens and (``valid`` ``(B, N)`` False) padding, which
    must sit after the real tokens, never match; ``r`` is capped at
    ``(N - protected) // 2``.
    """
    if r < 0:
        raise ValueError(f'r must be >= 0, got {r}')
    if protected < 0:
        raise ValueError(f'protected must be >= 0, got {protected}')
    n = metric.shape[1]
    r = min(r, max(n - protected, 0) // 2)
    if r == 0:
        none = metric.new_empty(metric.shape[0], 0)
        return Matching(none, none.long(), 0, protected)
    with torch.no_grad():
        scores = cosine_similarities(metric[:, ::2], metric[:, 1::2])
        if protected:
            scores[:, :(protected + 1) // 2] = -torch.inf
            scores[:, :, :protected // 2] = -torch.inf
        if valid is not None:
            scores.masked_fill_(~valid[:, ::2, None], -torch.inf)
            scores.masked_fill_(~valid[:, None, 1::2], -torch.inf)
        node_max, node_idx = scores.max(dim=-1)
    return Matching(node_max, node_idx, r, protected)


def count_above(matching: Matching, threshold: float) -> Tensor:
    """``(B,)`` on the device: the pairs of each clip more similar than
    ``threshold``, at most ``matching.r``: no wait for the device."""
    if matching.r == 0:
        return torch.zeros(matching.node_max.shape[:1], dtype=torch.long,
                           device=matching.node_max.device)
    return (matching.node_max > threshold).sum(-1).clamp(max=matching.r)


def merge_matched(matching: Matching, r: int) -> Merge:
    """``merge(x, reduce)`` that merges the ``r`` (<= ``matching.r``)
    best-matched A tokens into their partners (:func:`bipartite_soft_matching`
    describes it)."""
    if r == 0:
        return lambda x, reduce='mean': x
    protected = matching.protected
    with torch.no_grad():
        edge_idx = matching.node_max.argsort(dim=-1, descending=True,
                                             stable=True)
        unmerged_idx = edge_idx[:, r:, None]
        src_idx = edge_idx[:, :r, None]
        dst_idx = matching.node_idx[..., None].gather(1, src_idx)
        if protected:
            # Keep the protected tokens first, as they came.
            unmerged_idx = unmerged_idx.sort(dim=1).values

    def merge(x: Tensor, reduce: str = 'mean') -> Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        batch, n_a, channels = src.shape
        unmerged = src.gather(1, unmerged_idx.expand(batch, n_a - r,
                                                     channels))
        src = src.gather(1, src_idx.expand(batch, r, channels))
        dst = dst.scatter_reduce(
            1, dst_idx.expand(batch, r, channels), src, reduce=reduce)
        if not protected:
            return torch.cat([unmerged, dst], dim=1)
        # The protected tokens stay first and in their order (a class token
        # from A, a distillation token from B, as ToMe's timm patch keeps
        # them; registers alternating): the next split into A and B finds
        # them where they were.
        a_kept, b_kept = (protected + 1) // 2, protected // 2
        # Slices, not a Python list as index: that would be a blocking
        # host-to-device copy in every block on a GPU.
        front = [(unmerged if i % 2 == 0 else dst)[:, i // 2:i // 2 + 1]
                 for i in range(protected)]
        return torch.cat([*front, unmerged[:, a_kept:], dst[:, b_kept:]],
                         dim=1)

    return merge


def bipartite_soft_matching(
        metric: Tensor,
        r: int,
        protected: int = 0,
        valid: Optional[Tensor] = None,
        threshold: Optional[float] = None) -> Tuple[Merge, int]:
    """Match ``r`` tokens of one half into their most similar partners.

    Tokens alternate into sets A (even positions) and B (odd positions);
    every A token finds its most similar B token by cosine similarity of
    ``metric`` and the ``r`` best-matched A tokens are merged into their
    partners. The first ``protected`` tokens are never merged away.

    Args:
        metric: ``(B, N, D)`` features to compare (ToMe: the keys averaged
            over heads).
        r: tokens to remove; capped at ``(N - protected) // 2``.
        protected: leading tokens (e.g. a class token) to keep as they are.
        valid: ``(B, N)`` False for padding, which must sit after the real
            tokens: padding is neither merged nor merged into, so a clip
            merges the same tokens alone and in a padded batch.
        threshold: merge only the pairs more similar than this (cosine), at
            most ``r``: an adaptive count, so for one clip (B = 1) only; the
            count becomes a host integer (one wait for the device; a packed
            batch reads all its clips' counts at once: ToMe's reducer).

    Returns:
        ``merge(x, reduce)`` that applies the matching to any ``(B, N, C)``
        tensor (``reduce`` as in ``scatter_reduce``: 'sum', 'mean', 'amax'),
        giving ``(B, N - r, C)``; and the r actually used.
    """
    matching = match_tokens(metric, r, protected, valid)
    r = matching.r
    if threshold is not None and r:
        if metric.shape[0] != 1:
            raise ValueError('a threshold gives each clip its own count: '
                             'match one clip at a time (B = 1), got '
                             f'B = {metric.shape[0]}')
        r = int(count_above(matching, threshold)[0])
    return merge_matched(matching, r), r


def merge_with_sizes(merge: Merge, x: Tensor,
                     state: TokenState) -> Tuple[Tensor, TokenState]:
    """Apply ``merge`` as a size-weighted average; sizes add up and sources
    (if tracked) are united. Padding is moved back behind the real tokens."""
    size = state.sizes_like(x).float()
    merged_size = merge(size, 'sum')
    # Padding (size 0) merged only with padding stays 0 instead of 0/0.
    x = (merge(x * size, 'sum') / merged_size.clamp(min=1e-6)).to(x.dtype)
    source: Optional[Tensor] = None
    if state.source is not None:
        source = merge(state.source, 'amax')
    if state.padded:
        order = (merged_size[..., 0] == 0).to(torch.uint8).argsort(
            dim=1, stable=True)[..., None]
        x = x.gather(1, order.expand_as(x))
        merged_size = merged_size.gather(1, order)
        if source is not None:
            source = source.gather(1, order.expand_as(source))
    return x, TokenState(size=merged_size, source=source,
                         padded=state.padded)


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
    return merge_into_partners(x, state, kept, removed, partner,
                               torch.ones_like(partner, dtype=torch.bool))


def merge_into_partners(x: Tensor, state: TokenState, kept: Tensor,
                        removed: Tensor, partner: Tensor,
                        merged: Tensor) -> Tuple[Tensor, TokenState]:
    """Keep the tokens of ``x`` at ``kept`` ``(B, K)``; add each token at
    ``removed`` ``(B, R)`` flagged ``merged`` into ``kept[partner]``
    (``partner`` ``(B, R)`` indexes ``kept``), size-weighted, and drop the
    others. Sizes add up, sources (if tracked) are united."""
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


def merge_in_rounds(x: Tensor, metric: Tensor, state: TokenState,
                    r: int, protected: int = 0) -> Tuple[Tensor, TokenState]:
    """ToMe-merge ``r`` tokens of ``x`` ``(B, N, C)``, more than half if need
    be: in rounds of at most half the tokens, the ``metric`` ``(B, N, D)``
    merged along (size-weighted) for the next round; the first
    ``protected`` tokens never merge (:func:`bipartite_soft_matching`)."""
    most = x.shape[1] - protected - 1
    if not 0 <= r <= most:
        raise ValueError(f'r must be in [0, {most}] for {x.shape[1]} tokens '
                         f'({protected} protected), got {r}')
    channels = x.shape[-1]
    packed = torch.cat([x, metric.to(x.dtype)], -1)
    while r > 0:
        merge, done = bipartite_soft_matching(packed[..., channels:], r,
                                              protected)
        packed, state = merge_with_sizes(merge, packed, state)
        r -= done
    return packed[..., :channels], state
