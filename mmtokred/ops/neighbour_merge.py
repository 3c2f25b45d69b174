"""NEPAM-style neighbour-patch merging at the input, for tubelet grids.

The clip is cut into tubelets (the pixels the patch projection sees) on a
``(T', H', W')`` grid; non-overlapping windows of ``(t, h, w)`` tubelets are
scored by how much their tubelets differ from the window's first one, and the
most uniform windows become one token each. Only the surviving tubelets are
projected, which is where time and memory are saved.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_choice, check_window_fits
from .packed import pack
from .token_state import TokenState

DISTANCES = ('l1', 'l2', 'cosine')
REPRESENTATIVES = ('keep1', 'avg')
POSITIONS = ('representative', 'average')


def tubelet_pixels(video: Tensor, tubelet: Sequence[int]) -> Tensor:
    """``(B, C, T, H, W)`` -> ``(B, T', H', W', C*t*p*p)``, each vector in
    the (C, t, p, p) order of a Conv3d weight."""
    b, c, t, h, w = video.shape
    tt, ph, pw = tubelet
    x = video.reshape(b, c, t // tt, tt, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4)


def window_members(grid: Sequence[int], window: Sequence[int],
                   device: Optional[torch.device] = None) -> Tensor:
    """``(M, V)`` flat grid indices of the members of the windows that tile
    the divisible part of the grid (member 0 is the reference). Shapes only,
    no data-dependent indexing: it traces into a compiled graph."""
    check_window_fits('window', window, grid)
    index = torch.arange(grid[0] * grid[1] * grid[2],
                         device=device).reshape(*grid)
    counts = [g // s for g, s in zip(grid, window)]
    tiled = index[:counts[0] * window[0], :counts[1] * window[1],
                  :counts[2] * window[2]]
    members = tiled.reshape(counts[0], window[0], counts[1], window[1],
                            counts[2], window[2]).permute(0, 2, 4, 1, 3, 5)
    return members.reshape(-1, window[0] * window[1] * window[2])


def window_layout(grid: Sequence[int],
                  window: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """Flat grid indices of each window's members, and of the leftovers.

    Returns:
        ``(M, V)`` indices from :func:`window_members`, and the indices of
        the tubelets outside the tiled part, which stay unmerged.
    """
    members = window_members(grid, window)
    inside = torch.zeros(grid[0] * grid[1] * grid[2], dtype=torch.bool)
    inside[members.flatten()] = True
    return members, torch.arange(inside.numel())[~inside]


def window_scores(pixels: Tensor, members: Tensor, distance: str) -> Tensor:
    """``(B, M)`` mean distance of each window's tubelets to its first one.

    Args:
        pixels: ``(B, N0, P)`` tubelet pixels, flat over the grid.
        members: ``(M, V)`` from :func:`window_layout`.
        distance: 'l1' (mean absolute difference), 'l2' (mean squared
            difference) or 'cosine' (negative cosine similarity): the
            'manhattan', 'euclidean' and 'cosine' of NEPAM's official code
            (JackJiang2018/NEPAM model_nepam.py, ``NepamAblation``'s
            ``P1NormDist``, ``P2NormDist``, ``CosSim``).
    """
    check_choice('distance', distance, DISTANCES)
    windows = pixels[:, members]  # (B, M, V, P)
    reference = windows[:, :, :1]
    if distance == 'l1':
        per_patch = (windows - reference).abs_().mean(-1)
    elif distance == 'l2':
        per_patch = (windows - reference).square_().mean(-1)
    else:
        per_patch = -F.cosine_similarity(windows, reference, dim=-1)
    return per_patch.mean(-1)


def select_windows(scores: Tensor, num_merged: Optional[int],
                   threshold: Optional[float]) -> Tensor:
    """``(B, M)`` mask of the windows to merge: the ``num_merged`` most
    uniform (lowest score, ties to the earlier window) or those under
    ``threshold``."""
    if (num_merged is None) == (threshold is None):
        raise ValueError('give exactly one of num_merged and threshold')
    if threshold is not None:
        return scores < threshold
    windows = scores.shape[1]
    if not 0 <= num_merged <= windows:
        raise ValueError(f'num_merged={num_merged} must be in [0, {windows}] '
                         '(the windows of the grid)')
    order = scores.argsort(dim=1, stable=True)[:, :num_merged]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)


def neighbour_merge(video: Tensor,
                    weight: Tensor,
                    bias: Optional[Tensor],
                    pos_embed: Tensor,
                    window: Sequence[int],
                    num_merged: Optional[int] = None,
                    threshold: Optional[float] = None,
                    distance: str = 'l1',
                    representative: str = 'keep1',
                    position: str = 'representative',
                    track_source: bool = False,
                    keep: int = 0,
                    packed: bool = False) -> Tuple[Tensor, TokenState]:
    """Embed ``video`` with the most uniform windows merged into one token.

    Args:
        video: ``(B, C, T, H, W)``, whole tubelets.
        weight, bias: the tubelet projection (Conv3d weight
            ``(E, C, t, p, p)`` with kernel = stride).
        pos_embed: ``(1, N0, E)`` position embedding of the full grid.
        window: ``(t, h, w)`` tubelets per window.
        num_merged: merge this many windows in every clip (one token count
            for the batch), or
        threshold: merge every window scoring under it; clips then differ in
            length and are padded (size 0, ``state.padded``).
        distance: 'l1', 'l2' or 'cosine' over the tubelet pixels.
        representative: 'keep1' (the window's tubelet ``keep``) or 'avg'
            (the mean pixels of the window; the projection is linear, so
            this is the mean of the embeddings).
        position: position embedding of a merged token: 'representative'
            (of tubelet ``keep``) or 'average' (over the window).
        track_source: also return which input tubelets each token holds.
        keep: which tubelet of a window (in (t, h, w) order) stands for it;
            windows are scored against their first tubelet whatever it is.
        packed: with ``threshold``, return the clips packed into one
            sequence ``(1, sum, E)`` (``state.lengths``; only real tokens
            projected) where they differ in length, instead of padded.

    Returns:
        Tokens ``(B, N, E)`` with position embedding, and their state (sizes
        count the tubelets each token stands for).
    """
    check_choice('representative', representative, REPRESENTATIVES)
    check_choice('position', position, POSITIONS)
    tubelet = weight.shape[2:]
    pixels = tubelet_pixels(video, tubelet)
    grid = pixels.shape[1:4]
    pixels = pixels.flatten(1, 3)  # (B, N0, P)
    batch, n0, _ = pixels.shape
    members = window_members(grid, window, video.device)
    volume = members.shape[1]
    if not 0 <= keep < volume:
        raise ValueError(f'keep must be in [0, {volume - 1}] for windows of '
                         f'{tuple(window)}, got {keep}')

    merged = select_windows(
        window_scores(pixels, members, distance), num_merged, threshold)
    references = members[:, keep]
    others = torch.cat([members[:, :keep], members[:, keep + 1:]], 1)
    # Tubelets of merged windows other than the kept one are dropped.
    dropped = torch.zeros(batch, n0, dtype=torch.bool, device=video.device)
    dropped[:, others.flatten()] = merged[:, :, None].expand(
        -1, -1, volume - 1).flatten(1)
    kept_counts = n0 - dropped.sum(1)
    if threshold is None:  # the same count in every clip: known, no sync
        length, padded = n0 - num_merged * (volume - 1), False
    else:  # clips differ: pad to the longest (one wait for the device)
        counts = kept_counts.tolist()
        length, padded = max(counts), min(counts) < max(counts)
    # Kept tubelets first, in grid order.
    index = dropped.to(torch.uint8).argsort(dim=1, stable=True)[:, :length]

    size = torch.ones(batch, n0, device=video.device)
    size[:, references] = torch.where(merged, float(volume), 1.)
    padding = torch.arange(length, device=video.device) >= kept_counts[:, None]
    size = size.gather(1, index).masked_fill(padding, 0.)

    if representative == 'avg':
        means = pixels[:, members].mean(2)
        pixels = pixels.clone()
        pixels[:, references] = torch.where(merged[..., None], means,
                                            pixels[:, references])
    channels = pixels.shape[-1]
    chosen = pixels.gather(1, index[..., None].expand(-1, -1, channels))
    pos = pos_embed.expand(batch, -1, -1)
    if position == 'average':
        pos = pos.clone()
        pos[:, references] = torch.where(merged[..., None],
                                         pos_embed[:, members].mean(2),
                                         pos[:, references])
    pos = pos.gather(1, index[..., None].expand(-1, -1, pos.shape[-1]))
    lengths = None
    if packed and padded:  # only the real tokens go on
        lengths = tuple(counts)
        chosen, pos, size = (pack(t, lengths) for t in (chosen, pos, size))
    tokens = F.linear(chosen, weight.flatten(1), bias) + pos
    if padded and lengths is None:
        tokens = tokens.masked_fill(padding[..., None], 0.)

    source = None
    if track_source:
        owner = torch.arange(n0, device=video.device).repeat(batch, 1)
        owner[:, members.flatten()] = torch.where(
            merged[:, :, None], references[None, :, None],
            members[None]).flatten(1)
        rank = torch.full_like(owner, -1).scatter_(
            1, index, torch.arange(length, device=video.device).expand(
                batch, -1))
        token_of_patch = rank.gather(1, owner)  # (B, N0)
        source = F.one_hot(token_of_patch, length).transpose(1, 2).to(
            tokens.dtype)
        if lengths is not None:
            source = pack(source, lengths)
    return tokens, TokenState(
        size=size[..., None], source=source,
        padded=padded and lengths is None, lengths=lengths)
