"""Packed batches: the tokens of clips of different lengths in one sequence.

Where clips keep different numbers of tokens (NEPAM's threshold, ToMe's
similarity threshold), padding them to the longest wastes the padding's
compute, and its key bias keeps the fused kernels off their fastest path.
Packed, the batch is one sequence ``(1, sum(lengths), C)`` with the clips'
``lengths`` known on the host: the linear layers run on every token at
once, attention is restricted to each clip
(:mod:`~mmtokred.ops.packed_attention`), pooling is per clip. The lengths
are host integers because every slice of a clip is a shape; what the device
needs of them goes there without a wait (:mod:`~mmtokred.ops.lengths`).
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .lengths import cumulative_offsets
from .token_state import TokenState


def check_lengths(lengths: Sequence[int], total: int) -> Tuple[int, ...]:
    """``lengths`` as a tuple of ints, checked to cover ``total`` tokens."""
    lengths = tuple(int(n) for n in lengths)
    if not lengths or min(lengths) < 0 or sum(lengths) != total:
        raise ValueError(f'packed lengths {lengths} must be >= 0, at least '
                         f'one, and sum to the {total} tokens')
    return lengths


def split_clips(x: Tensor, lengths: Sequence[int],
                dim: int = 1) -> List[Tensor]:
    """Each clip's slice of the packed ``x`` along ``dim`` (views)."""
    return list(x.split(list(lengths), dim))


def first_tokens(lengths: Sequence[int], device: torch.device) -> Tensor:
    """Indices of each clip's first token in the packed sequence."""
    return cumulative_offsets(lengths, device)[:-1]


def pack(x: Tensor, lengths: Sequence[int]) -> Tensor:
    """``(B, N, C)`` with each clip's real tokens first -> ``(1, sum, C)``:
    the first ``lengths[i]`` tokens of clip ``i``, clip after clip."""
    return torch.cat([clip[None, :n] for clip, n in zip(x, lengths)], 1)


def pack_padded(x: Tensor, state: TokenState) -> Tuple[Tensor, TokenState]:
    """A padded batch ``(B, N, C)`` (size 0 for padding, after each clip's
    real tokens) packed: ``(1, sum, C)`` and its state with ``lengths``.
    The lengths become host integers here: one wait for the device."""
    lengths = (state.size[..., 0] > 0).sum(1).tolist()
    source = None if state.source is None else pack(state.source, lengths)
    return pack(x, lengths), TokenState(size=pack(state.size, lengths),
                                        source=source,
                                        lengths=tuple(lengths))


def pack_equal(x: Tensor, state: TokenState) -> Tuple[Tensor, TokenState]:
    """A batch ``(B, N, C)`` of clips of one length, packed (no copy)."""
    batch, tokens = x.shape[:2]
    source = None if state.source is None else \
        state.source.reshape(1, batch * tokens, -1)
    size = None if state.size is None else state.size.reshape(1, -1, 1)
    return x.reshape(1, batch * tokens, -1), TokenState(
        size=size, source=source, lengths=(tokens, ) * batch)


def packed_cat(clips: Sequence[Tensor],
               states: Sequence[TokenState]) -> Tuple[Tensor, TokenState]:
    """Clips ``(1, n_i, C)`` with their states, packed into one sequence."""
    sized = any(s.size is not None for s in states)
    size = torch.cat([s.sizes_like(x) for x, s in zip(clips, states)], 1) \
        if sized else None
    source = None
    if states[0].source is not None:
        source = torch.cat([s.source for s in states], 1)
    return torch.cat(list(clips), 1), TokenState(
        size=size, source=source,
        lengths=tuple(x.shape[1] for x in clips))
