"""Packed batches: the tokens of clips of different lengths in one sequence.

Where clips keep different numbers of tokens (NEPAM's threshold, ToMe's
similarity threshold), padding them to the longest wastes the padding's
compute, and its key bias keeps the fused kernels off their fastest path.
Packed, the batch is one sequence ``(1, sum(lengths), C)`` with the clips'
``lengths`` known on the host: the linear layers run on every token at
once, attention is restricted to each clip, pooling is per clip. The lengths
are host integers because every slice of a clip is a shape.

Attention over a packed sequence has three kernels (:data:`PACKED_KERNELS`):

- 'per_clip': the fused kernel of :func:`~mmtokred.ops.attention.attention`
  on each clip's slice, one call per clip;
- 'nested': one call of ``scaled_dot_product_attention`` on a nested jagged
  tensor (on CUDA a variable-length flash kernel; the key bias as one more
  channel, as :func:`~mmtokred.ops.attention.attention` folds it);
- 'flex': ``flex_attention`` with a block mask that keeps each query to its
  clip's keys (compiled, once per set of lengths).

:func:`packed_kernel` chooses one by the device, as measured by
``tools/benchmark.py --batching`` (docs/packed.md);
``MMTOKRED_PACKED_ATTENTION`` or :func:`set_packed_kernel` overrides it.
"""
import functools
from typing import ContextManager, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import attention, with_bias_channel
from .kernel_setting import KernelSetting
from .token_state import TokenState

#: Kernels of :func:`packed_attention`; 'auto' chooses by the device.
PACKED_KERNELS = ('auto', 'per_clip', 'nested', 'flex')
#: The environment variable that sets the packed kernel for a process.
PACKED_KERNEL_ENV = 'MMTOKRED_PACKED_ATTENTION'
#: What 'auto' runs on each device type: on CPU the per-clip loop, the
#: fastest of the three there (docs/packed.md, ViT-B, 16 clips: per_clip
#: 351 ms, flex 683 ms, nested 13141 ms); elsewhere the nested jagged
#: tensor, whose CUDA kernel is the variable-length flash attention that
#: packing is made for (not measured: no GPU was lent).
AUTO_KERNELS = {'cpu': 'per_clip'}
AUTO_ELSEWHERE = 'nested'


_PACKED_KERNEL = KernelSetting(PACKED_KERNEL_ENV, PACKED_KERNELS)


def set_packed_kernel(kernel: str) -> str:
    """Set the packed attention kernel ('auto', 'per_clip', 'nested' or
    'flex') for this process; returns the previous setting."""
    return _PACKED_KERNEL.set(kernel)


def packed_kernel_set_to(kernel: str) -> ContextManager[None]:
    """:func:`set_packed_kernel` for the duration of a ``with`` block."""
    return _PACKED_KERNEL.set_to(kernel)


def packed_kernel(device: torch.device) -> str:
    """The kernel :func:`packed_attention` runs on ``device``."""
    if _PACKED_KERNEL.value != 'auto':
        return _PACKED_KERNEL.value
    return AUTO_KERNELS.get(torch.device(device).type, AUTO_ELSEWHERE)


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
    return torch.tensor([0, *lengths[:-1]], device=device).cumsum(0)


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


def _per_clip(q: Tensor, k: Tensor, v: Tensor, scale: float,
              lengths: Sequence[int], key_bias: Optional[Tensor],
              dropout_p: float) -> Tensor:
    biases = [None] * len(lengths) if key_bias is None else \
        split_clips(key_bias, lengths)
    return torch.cat([
        attention(q_i, k_i, v_i, scale, bias, dropout_p)
        for q_i, k_i, v_i, bias in zip(
            split_clips(q, lengths, 2), split_clips(k, lengths, 2),
            split_clips(v, lengths, 2), biases) if q_i.shape[2]
    ] or [q[..., :v.shape[-1]]], 2)


def _jagged(t: Tensor, lengths: Sequence[int]) -> Tensor:
    """``(1, H, sum, D)`` -> nested ``(B, H, j, D)``."""
    offsets = torch.tensor([0, *lengths], device=t.device).cumsum(0)
    # The kernels want (sum, H, D) contiguous: one copy.
    values = t[0].transpose(0, 1).contiguous()
    return torch.nested.nested_tensor_from_jagged(
        values, offsets).transpose(1, 2)


def _nested(q: Tensor, k: Tensor, v: Tensor, scale: float,
            lengths: Sequence[int], key_bias: Optional[Tensor],
            dropout_p: float) -> Tensor:
    head_dim = v.shape[-1]
    q, k, v, scale = with_bias_channel(q, k, v, scale, key_bias)
    lengths = [n for n in lengths if n]  # nested tensors hold no empty clip
    if not lengths:
        return v[..., :head_dim]
    out = F.scaled_dot_product_attention(
        _jagged(q, lengths), _jagged(k, lengths), _jagged(v, lengths),
        dropout_p=dropout_p, scale=scale)
    values = out.transpose(1, 2).values()  # (sum, H, D')
    return values.transpose(0, 1)[None, ..., :head_dim]


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _document_mask(lengths: Tuple[int, ...], device: str):
    from torch.nn.attention.flex_attention import create_block_mask
    clip = torch.repeat_interleave(
        torch.arange(len(lengths), device=device),
        torch.tensor(lengths, device=device))

    def same_clip(b, h, q_index, k_index):
        return clip[q_index] == clip[k_index]

    total = sum(lengths)
    return create_block_mask(same_clip, None, None, total, total,
                             device=device)


def _flex(q: Tensor, k: Tensor, v: Tensor, scale: float,
          lengths: Sequence[int], key_bias: Optional[Tensor],
          dropout_p: float) -> Tensor:
    if dropout_p:
        raise ValueError("the 'flex' packed kernel has no dropout: train "
                         "with the 'per_clip' or 'nested' kernel")
    mask = _document_mask(tuple(lengths), str(q.device))
    if key_bias is None:
        return _compiled_flex()(q, k, v, block_mask=mask, scale=scale)
    bias = key_bias[0].to(torch.float32)

    def key_bias_mod(score, b, h, q_index, k_index):
        return score + bias[k_index]

    return _compiled_flex()(q, k, v, score_mod=key_bias_mod, block_mask=mask,
                            scale=scale)


_KERNELS = {'per_clip': _per_clip, 'nested': _nested, 'flex': _flex}


def packed_attention(q: Tensor,
                     k: Tensor,
                     v: Tensor,
                     scale: float,
                     lengths: Sequence[int],
                     key_bias: Optional[Tensor] = None,
                     dropout_p: float = 0.,
                     kernel: Optional[str] = None) -> Tensor:
    """``softmax(scale * q k^T + key_bias) v`` of each clip of a packed
    sequence on its own: no query sees another clip's keys.

    Args:
        q, k, v: ``(1, H, sum(lengths), D)``.
        scale: multiplier of the dot products.
        lengths: tokens of each clip, in order (a clip may have none).
        key_bias: ``(1, sum(lengths))`` added to each key's logits, or None.
        kernel: one of :data:`PACKED_KERNELS` but 'auto' (None: the one
            :func:`packed_kernel` chooses).
    """
    lengths = check_lengths(lengths, q.shape[2])
    kernel = packed_kernel(q.device) if kernel is None else kernel
    if kernel not in _KERNELS:
        raise ValueError(f'kernel must be one of {tuple(_KERNELS)}, got '
                         f'{kernel!r}')
    return _KERNELS[kernel](q, k, v, scale, lengths, key_bias, dropout_p)
