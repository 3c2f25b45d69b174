"""Attention over a packed sequence: each clip attends to its own keys.

Four kernels (:data:`PACKED_KERNELS`), every one with the per-key bias of
proportional attention:

- 'per_clip': the fused kernel of :func:`~mmtokred.ops.attention.attention`
  on each clip's slice, one call per clip;
- 'nested': one call of ``scaled_dot_product_attention`` on a nested jagged
  tensor (the key bias as one more channel, as
  :func:`~mmtokred.ops.attention.with_bias_channel` folds it);
- 'varlen': ``torch.nn.attention.varlen.varlen_attn``, FlashAttention's
  variable-length kernel over cumulative offsets (CUDA, fp16 and bf16, no
  dropout; the bias as a channel);
- 'flex': ``flex_attention`` with a block mask that keeps each query to its
  clip's keys, compiled once for every length (dynamic shapes).

No kernel reads a device value: the lengths and their maxima are host
integers and go to the device without a wait (:mod:`.lengths`).

:func:`packed_kernel` gives the kernel 'auto' runs: the one measured fastest
on this device type and dtype where a tool measured them outside the forward
pass (:func:`~mmtokred.measure.kernels.choose_packed_kernel`, which records
it here with :func:`record_packed_choice`), else :func:`unmeasured_kernel`.
``MMTOKRED_PACKED_ATTENTION`` or :func:`set_packed_kernel` overrides both.
"""
import functools
import importlib.util
from typing import ContextManager, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import attention, pad_head_dim, with_bias_channel
from .kernel_setting import KernelSetting
from .lengths import cumulative_offsets
from .packed import check_lengths, split_clips
from .packed_flex import flex_packed_attention

#: Kernels of :func:`packed_attention`; 'auto' chooses (:func:`packed_kernel`).
PACKED_KERNELS = ('auto', 'per_clip', 'nested', 'varlen', 'flex')
#: The environment variable that sets the packed kernel for a process.
PACKED_KERNEL_ENV = 'MMTOKRED_PACKED_ATTENTION'
#: Half precisions, the only ones FlashAttention (the 'varlen' kernel) runs.
HALF = (torch.float16, torch.bfloat16)
#: The widest head FlashAttention takes (its head dims go up to 256).
FLASH_MAX_HEAD_DIM = 256
#: Whether this torch has flex_attention (looked up once: the check runs
#: in every block's attention).
HAS_FLEX = importlib.util.find_spec(
    'torch.nn.attention.flex_attention') is not None

_PACKED_KERNEL = KernelSetting(PACKED_KERNEL_ENV, PACKED_KERNELS)


def set_packed_kernel(kernel: str) -> str:
    """Set the packed attention kernel (one of :data:`PACKED_KERNELS`) for
    this process; returns the previous setting."""
    return _PACKED_KERNEL.set(kernel)


def packed_kernel_set_to(kernel: str) -> ContextManager[None]:
    """:func:`set_packed_kernel` for the duration of a ``with`` block."""
    return _PACKED_KERNEL.set_to(kernel)


def packed_kernel_setting() -> str:
    """The process's setting: 'auto' or the kernel it names."""
    return _PACKED_KERNEL.value


def record_packed_choice(device: torch.device, dtype: torch.dtype,
                         kernel: Optional[str]) -> None:
    """Record ``kernel`` as measured fastest on ``device``'s type in
    ``dtype`` ('auto' runs it from now on); None forgets the record."""
    _PACKED_KERNEL.record(device, dtype, kernel)


@functools.lru_cache(maxsize=None)
def flash_varlen_missing(device: torch.device) -> str:
    """Why ``varlen_attn`` cannot run on ``device`` at all ('' where it
    can): it needs CUDA, a torch that has it, and an Ampere or newer GPU
    (FlashAttention's)."""
    if device.type != 'cuda':
        return f'it runs FlashAttention, on CUDA only; got {device.type}'
    if importlib.util.find_spec('torch.nn.attention.varlen') is None:
        return (f'torch {torch.__version__} has no '
                'torch.nn.attention.varlen')
    if not torch.cuda.is_available():  # nothing to ask: the rule's case
        return ''
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return (f'FlashAttention needs compute capability 8.0 or newer, '
                f'this GPU has {capability[0]}.{capability[1]}')
    return ''


def unmeasured_kernel(device: torch.device, dtype: torch.dtype,
                      dropout: bool = False) -> str:
    """What 'auto' runs where no kernel was measured: on CPU 'per_clip'
    (docs/packed.md: ViT-B, 16 clips, fp32, two AMD EPYCs: per_clip 351-373
    ms a call, flex 683-880, nested 13141-19099); on CUDA in fp16 and bf16
    'varlen', the flash kernel packing is made for, and in fp32, with
    dropout (which 'varlen' lacks) or where FlashAttention does not run
    (:func:`flash_varlen_missing`) 'nested', whose CUDA kernel is
    memory-efficient attention over the jagged clips. On CUDA these are a
    rule, not a measurement:
    :func:`~mmtokred.measure.kernels.choose_packed_kernel` measures."""
    device = torch.device(device)
    if device.type == 'cpu':
        return 'per_clip'
    if dtype in HALF and not dropout and not flash_varlen_missing(device):
        return 'varlen'
    return 'nested'


def _packed_choice(device: torch.device, dtype: torch.dtype,
                   dropout: bool) -> Tuple[str, str]:
    """The kernel 'auto' or the setting runs, and why."""
    rule = unmeasured_kernel(device, dtype, dropout)
    kernel, why = _PACKED_KERNEL.chosen(device, dtype, rule)
    if dropout and kernel in NO_DROPOUT and kernel != _PACKED_KERNEL.value:
        return rule, 'auto: the rule, the measured kernel has no dropout'
    return kernel, why


def packed_kernel(device: torch.device,
                  dtype: torch.dtype = torch.float32,
                  dropout: bool = False) -> str:
    """The kernel :func:`packed_attention` runs on ``device`` in ``dtype``:
    the setting, else the measured fastest, else :func:`unmeasured_kernel`
    (a measured kernel without dropout gives way to the rule while training
    with it)."""
    return _packed_choice(device, dtype, dropout)[0]


def packed_kernel_reason(device: torch.device,
                         dtype: torch.dtype = torch.float32,
                         dropout: bool = False) -> str:
    """:func:`packed_kernel` for ``device`` and ``dtype``, and why."""
    return '{} ({})'.format(*_packed_choice(device, dtype, dropout))


def kernel_refusal(kernel: str, q: Tensor, dropout_p: float) -> str:
    """Why ``kernel`` cannot run on ``q`` ('' where it can)."""
    if kernel in NO_DROPOUT and dropout_p:
        return f'it has no dropout (dropout_p={dropout_p})'
    if kernel == 'flex' and not HAS_FLEX:
        return (f'torch {torch.__version__} has no '
                'torch.nn.attention.flex_attention')
    if kernel == 'varlen':
        if q.device.type != 'cuda' or q.dtype not in HALF:
            return ('it runs FlashAttention, on CUDA in fp16 or bf16 only; '
                    f'got {q.dtype} on {q.device.type}')
        missing = flash_varlen_missing(q.device)
        if missing:
            return missing
        if q.shape[-1] > FLASH_MAX_HEAD_DIM:
            return (f'FlashAttention takes head dims up to '
                    f'{FLASH_MAX_HEAD_DIM}, got {q.shape[-1]}')
    return ''


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


def _tokens_first(t: Tensor) -> Tensor:
    """``(1, H, sum, D)`` -> ``(sum, H, D)``, contiguous (one copy)."""
    return t[0].transpose(0, 1).contiguous()


def _heads_first(t: Tensor, head_dim: int) -> Tensor:
    """``(sum, H, D')`` -> ``(1, H, sum, head_dim)``."""
    return t.transpose(0, 1)[None, ..., :head_dim]


def _nested(q: Tensor, k: Tensor, v: Tensor, scale: float,
            lengths: Sequence[int], key_bias: Optional[Tensor],
            dropout_p: float) -> Tensor:
    head_dim = v.shape[-1]
    q, k, v, scale = with_bias_channel(q, k, v, scale, key_bias)
    lengths = [n for n in lengths if n]  # nested tensors hold no empty clip
    if not lengths:
        return v[..., :head_dim]
    offsets = cumulative_offsets(lengths, q.device)

    def jagged(t: Tensor) -> Tensor:  # (1, H, sum, D) -> (B, H, j, D)
        # The extremes as hints: else the kernel reads them off the device.
        return torch.nested.nested_tensor_from_jagged(
            _tokens_first(t), offsets, min_seqlen=min(lengths),
            max_seqlen=max(lengths)).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        jagged(q), jagged(k), jagged(v), dropout_p=dropout_p, scale=scale)
    return _heads_first(out.transpose(1, 2).values(), head_dim)


def _varlen(q: Tensor, k: Tensor, v: Tensor, scale: float,
            lengths: Sequence[int], key_bias: Optional[Tensor],
            dropout_p: float) -> Tensor:
    from torch.nn.attention.varlen import varlen_attn
    head_dim = v.shape[-1]
    q, k, v, scale = with_bias_channel(q, k, v, scale, key_bias)
    q, k, v = pad_head_dim(q, k, v)  # FlashAttention: multiples of 8
    lengths = [n for n in lengths if n]
    if not lengths:
        return v[..., :head_dim]
    offsets = cumulative_offsets(lengths, q.device, torch.int32)
    longest = max(lengths)
    out = varlen_attn(_tokens_first(q), _tokens_first(k), _tokens_first(v),
                      offsets, offsets, longest, longest, scale=scale)
    return _heads_first(out, head_dim)


_KERNELS = {'per_clip': _per_clip, 'nested': _nested, 'varlen': _varlen,
            'flex': flex_packed_attention}
#: Kernels without dropout.
NO_DROPOUT = ('varlen', 'flex')


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
    if kernel is None:
        kernel = packed_kernel(q.device, q.dtype, dropout_p > 0)
    if kernel not in _KERNELS:
        raise ValueError(f'kernel must be one of {tuple(_KERNELS)}, got '
                         f'{kernel!r}')
    refusal = kernel_refusal(kernel, q, dropout_p)
    if refusal:
        raise ValueError(
            f'the {kernel!r} packed attention kernel cannot run here: '
            f'{refusal}. Choose another with {PACKED_KERNEL_ENV} or '
            f"set_packed_kernel ('auto' chooses one that runs)")
    return _KERNELS[kernel](q, k, v, scale, lengths, key_bias, dropout_p)
