"""Attention over a packed sequence through compiled ``flex_attention``.

A block mask keeps each query to its clip's keys. It is built from the
clips' spans, block by block (never the ``sum x sum`` token mask), and the
kernel is compiled once for every total length (dynamic shapes): a
threshold budget gives every batch a new total, and static shapes
recompiled for each until dynamo's recompile limit, after which eager
flex_attention formed the whole score matrix.
"""
import functools
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import pad_head_dim, with_bias_channel
from .lengths import clip_index

#: The smallest head dim inductor's CUDA flex_attention kernel takes
#: ("tl.dot does not support embedding size less than 16",
#: torch/_inductor/kernel/flex/flex_attention.py): heads are padded to it.
FLEX_MIN_HEAD_DIM = 16
#: Queries and keys per block of the block mask (flex_attention's).
FLEX_BLOCK = 128


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    def flex(q: Tensor, k: Tensor, v: Tensor, block_mask, scale: float,
             bias: Optional[Tensor]) -> Tensor:
        # The bias's score_mod is made inside the compiled function: a
        # new closure passed in would be a new guard, a recompile a call.
        if bias is None:
            return flex_attention(q, k, v, block_mask=block_mask,
                                  scale=scale)

        def key_bias_mod(score, b, h, q_index, k_index):
            return score + bias[k_index]

        return flex_attention(q, k, v, score_mod=key_bias_mod,
                              block_mask=block_mask, scale=scale)

    return torch.compile(flex, dynamic=True)  # one kernel for every total


def _ordered(blocks: Tensor) -> Tuple[Tensor, Tensor]:
    """A ``(Q, K)`` block pattern as flex's counts ``(1, 1, Q)`` and
    indices ``(1, 1, Q, K)``, the set blocks first."""
    counts = blocks.sum(-1, dtype=torch.int32)
    indices = (~blocks).to(torch.uint8).argsort(dim=-1, stable=True)
    return counts[None, None], indices.to(torch.int32)[None, None]


@functools.lru_cache(maxsize=8)
def document_mask(lengths: Tuple[int, ...], device: torch.device):
    """flex_attention's block mask keeping each query to its clip's keys,
    built from the clips' spans block by block: ``(sum / 128)^2`` entries,
    never the ``sum^2`` of the token mask (equal to ``create_block_mask``'s
    for the same mask: tests/test_packed.py)."""
    from torch.nn.attention.flex_attention import BlockMask
    total = sum(lengths)
    clip = clip_index(lengths, device)
    starts = torch.arange(0, total, FLEX_BLOCK, device=device)
    ends = (starts + FLEX_BLOCK).clamp(max=total) - 1
    first, last = clip[starts], clip[ends]  # the clips a block spans
    meets = (first[:, None] <= last[None]) & (first[None] <= last[:, None])
    # A whole block inside one clip attends to a whole block of that clip
    # without the mask.
    whole = (first == last) & (ends - starts + 1 == FLEX_BLOCK)
    full = meets & whole[:, None] & whole[None] & \
        (first[:, None] == first[None])

    def same_clip(b, h, q_index, k_index):
        return clip[q_index] == clip[k_index]

    return BlockMask.from_kv_blocks(
        *_ordered(meets & ~full), *_ordered(full), BLOCK_SIZE=FLEX_BLOCK,
        mask_mod=same_clip, seq_lengths=(total, total))


def flex_packed_attention(q: Tensor, k: Tensor, v: Tensor, scale: float,
                          lengths: Sequence[int],
                          key_bias: Optional[Tensor],
                          dropout_p: float = 0.) -> Tensor:
    """``softmax(scale * q k^T + key_bias) v`` of each clip of a packed
    sequence ``(1, H, sum(lengths), D)`` through compiled flex_attention
    (no dropout: :func:`~mmtokred.ops.packed_attention.packed_attention`
    refuses it before)."""
    head_dim = v.shape[-1]
    bias = None if key_bias is None else key_bias[0].to(torch.float32)
    if bias is not None and q.device.type == 'cpu':
        # Inductor's C++ flex template (the runtime split sizes of
        # pytorch#143638) miscompiles a captured bias under dynamic shapes
        # in torch 2.13 ("'cur_qSplitSize8' was not declared"; no upstream
        # issue found): on CPU the bias goes in as a channel.
        q, k, v, scale = with_bias_channel(q, k, v, scale, key_bias)
        bias = None
    q, k, v = pad_head_dim(q, k, v, 1, FLEX_MIN_HEAD_DIM)
    # Whole blocks, two at least, the padding a clip of its own: dynamo
    # specialises a one-block sequence (its 0/1 rule) into a recompile,
    # which the same C++ template miscompiles.
    total = q.shape[2]
    padding = max(-(-total // FLEX_BLOCK), 2) * FLEX_BLOCK - total
    if padding:
        q, k, v = (F.pad(t, (0, 0, 0, padding)) for t in (q, k, v))
        lengths = (*lengths, padding)
        bias = None if bias is None else F.pad(bias, (0, padding))
    mask = document_mask(tuple(lengths), q.device)
    out = _compiled_flex()(q, k, v, mask, scale, bias)
    return out[:, :, :total, :head_dim]
