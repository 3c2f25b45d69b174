"""Fused attention with a per-key additive bias folded into the dot product,
and the CPU half-precision kernel chosen for the machine.

Flash-style kernels take no attention mask or bias. A bias that depends only
on the key (log size for proportional attention, a large negative number for
padding) can be written as one more channel: q' = [q * scale, 1],
k' = [k, bias], v' = [v, 0], so q'.k' = scale * q.k + bias and the kernel
runs with scale 1. Channels are padded with zeros to a multiple of 8, which
the fused kernels want.

On CPU in bf16 or fp16, torch's fused kernel is fast only where the CPU has
matrix units for that precision: its flash attention packs its operands for
oneDNN's AMX micro-kernels when ``cpublas::could_pack(dtype)`` holds
(``flash_attention_kernel_impl`` in
aten/src/ATen/native/cpu/FlashAttentionKernel.cpp), which ``Pack::could_pack``
in aten/src/ATen/native/CPUBlas.cpp grants for bf16 from AMX and for fp16
from AMX-FP16 on, with oneDNN enabled. Elsewhere it computes half precision
as slowly as fp32 (torch 2.13 on an AMD EPYC with AVX512-BF16: 58 ms for
ViT-B's 1568 tokens and 12 heads either way), while bf16 matrix products run
about twice as fast as fp32 ones. There the attention runs as matrix
products over blocks of ``QUERY_BLOCK`` queries (:func:`blocked_attention`);
on an AMX Xeon the fused kernel is 16x faster than those products (31 against
511 ms a call). :func:`cpu_kernel` makes the choice from what torch reports
of the machine, the same test torch's kernel makes; ``MMTOKRED_CPU_ATTENTION``
or :func:`set_cpu_kernel` overrides it.
"""
from typing import ContextManager, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernel_setting import KernelSetting

#: Queries per block of the CPU half-precision blocked path.
QUERY_BLOCK = 128
#: Settings of the CPU half-precision kernel: 'auto' chooses by the machine.
CPU_KERNELS = ('auto', 'fused', 'blocked')
#: The environment variable that sets the CPU kernel for a whole process.
CPU_KERNEL_ENV = 'MMTOKRED_CPU_ATTENTION'


_CPU_KERNEL = KernelSetting(CPU_KERNEL_ENV, CPU_KERNELS)


def set_cpu_kernel(kernel: str) -> str:
    """Set the CPU half-precision attention kernel ('auto', 'fused' or
    'blocked') for this process; returns the previous setting."""
    return _CPU_KERNEL.set(kernel)


def cpu_kernel_set_to(kernel: str) -> ContextManager[None]:
    """:func:`set_cpu_kernel` for the duration of a ``with`` block."""
    return _CPU_KERNEL.set_to(kernel)


def _probe_matrix_units() -> Dict[torch.dtype, bool]:
    if not torch.backends.mkldnn.is_available():
        return {torch.bfloat16: False, torch.float16: False}
    return {
        torch.bfloat16: bool(getattr(torch.cpu, '_is_amx_tile_supported',
                                     lambda: False)()),
        torch.float16: bool(getattr(torch.cpu, '_is_amx_fp16_supported',
                                    lambda: False)()),
    }


#: Whether torch's fused CPU attention runs each half precision on matrix
#: units here (AMX for bf16, AMX-FP16 for fp16, oneDNN built in), as
#: ``cpublas::could_pack`` decides; read once, so that a compiled forward
#: pass finds a constant.
MATRIX_UNITS = _probe_matrix_units()


def fused_kernel_has_matrix_units(dtype: torch.dtype) -> bool:
    """:data:`MATRIX_UNITS` for ``dtype`` (False for any other dtype)."""
    return MATRIX_UNITS.get(dtype, False)


def cpu_kernel(dtype: torch.dtype) -> str:
    """The kernel :func:`attention` runs for CPU tensors of ``dtype``:
    'fused' (torch's) or 'blocked' (:func:`blocked_attention`, half
    precision only)."""
    setting = _CPU_KERNEL.value
    if dtype not in (torch.bfloat16, torch.float16) or setting == 'fused':
        return 'fused'
    if setting == 'blocked':
        return 'blocked'
    return 'fused' if fused_kernel_has_matrix_units(dtype) else 'blocked'


def cpu_kernel_reason(dtype: torch.dtype) -> str:
    """Which kernel :func:`cpu_kernel` chooses for ``dtype``, and why."""
    kernel = cpu_kernel(dtype)
    name = {torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(dtype)
    if name is None:
        return f'{kernel} ({dtype}: the fused kernel always)'
    if _CPU_KERNEL.value != 'auto':
        return f'{kernel} ({name}: set by {CPU_KERNEL_ENV} or set_cpu_kernel)'
    units = 'AMX' if dtype == torch.bfloat16 else 'AMX-FP16'
    if fused_kernel_has_matrix_units(dtype):
        return (f'{kernel} ({name}, auto: torch reports {units} on this CPU, '
                f"where its fused kernel runs {name} on the matrix units)")
    return (f'{kernel} ({name}, auto: torch reports no {units} on this CPU, '
            f'so its fused kernel would run {name} without matrix units)')


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, scale: float,
                      key_bias: Optional[Tensor] = None) -> Tensor:
    """``softmax(scale * q k^T + key_bias) v`` as matrix products over
    blocks of ``QUERY_BLOCK`` queries (the softmax is computed in fp32 inside
    torch's kernel and rounded once)."""
    # Contiguous once, not copied again by every block's matrix product.
    keys, v = k.transpose(-2, -1).contiguous(), v.contiguous()
    bias = None if key_bias is None else key_bias.to(q.dtype)[:, None,
                                                              None, :]
    blocks = []
    for start in range(0, q.shape[2], QUERY_BLOCK):
        logits = (q[:, :, start:start + QUERY_BLOCK] * scale) @ keys
        if bias is not None:
            logits = logits + bias
        blocks.append(logits.softmax(-1) @ v)
    return torch.cat(blocks, 2)


#: How :func:`attention` adds a per-key bias: as an additive ``(B, 1, 1,
#: N)`` attention mask, or folded into q and k as one more channel
#: (:func:`with_bias_channel`); 'auto' chooses (:func:`key_bias_mode`).
KEY_BIAS_MODES = ('auto', 'mask', 'channel')
#: The environment variable that sets the key bias mode for a process.
KEY_BIAS_ENV = 'MMTOKRED_KEY_BIAS'

_KEY_BIAS = KernelSetting(KEY_BIAS_ENV, KEY_BIAS_MODES)


def set_key_bias_mode(mode: str) -> str:
    """Set the key bias mode (one of :data:`KEY_BIAS_MODES`) for this
    process; returns the previous setting."""
    return _KEY_BIAS.set(mode)


def key_bias_mode_set_to(mode: str) -> ContextManager[None]:
    """:func:`set_key_bias_mode` for the duration of a ``with`` block."""
    return _KEY_BIAS.set_to(mode)


def key_bias_setting() -> str:
    """The process's setting: 'auto' or the mode it names."""
    return _KEY_BIAS.value


def record_key_bias_choice(device: torch.device, dtype: torch.dtype,
                           mode: Optional[str]) -> None:
    """Record ``mode`` as measured fastest on ``device``'s type in
    ``dtype`` ('auto' runs it from now on); None forgets the record."""
    _KEY_BIAS.record(device, dtype, mode)


def key_bias_mode(device: torch.device, dtype: torch.dtype) -> str:
    """The mode :func:`attention` adds a key bias in: the setting, else the
    measured fastest (:func:`~mmtokred.measure.kernels.choose_key_bias_mode`),
    else the rule: 'channel', which FlashAttention takes and a mask it does
    not, and which every figure so far was measured with (on an AMD EPYC in
    fp32 the mask saved 9% of a call, docs/packed.md; on a GPU nothing was
    measured)."""
    return _KEY_BIAS.chosen(device, dtype, 'channel')[0]


def key_bias_mode_reason(device: torch.device, dtype: torch.dtype) -> str:
    """:func:`key_bias_mode` for ``device`` and ``dtype``, and why."""
    return '{} ({})'.format(*_KEY_BIAS.chosen(device, dtype, 'channel'))


def attention(q: Tensor,
              k: Tensor,
              v: Tensor,
              scale: float,
              key_bias: Optional[Tensor] = None,
              dropout_p: float = 0.) -> Tensor:
    """``softmax(scale * q k^T + key_bias) v`` through the fused kernel
    (on CPU in half precision, the kernel :func:`cpu_kernel` chooses), the
    key bias added as :func:`key_bias_mode` says.

    Args:
        q, k, v: ``(B, H, N, D)``.
        scale: multiplier of the dot products.
        key_bias: ``(B, N)`` added to the logits of every query for each key,
            or None.
    """
    if (q.device.type == 'cpu' and dropout_p == 0
            and cpu_kernel(q.dtype) == 'blocked'):
        return blocked_attention(q, k, v, scale, key_bias)
    if key_bias is not None and key_bias_mode(q.device, q.dtype) == 'mask':
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_bias.to(q.dtype)[:, None, None, :],
            dropout_p=dropout_p, scale=scale)
    head_dim = v.shape[-1]
    q, k, v, scale = with_bias_channel(q, k, v, scale, key_bias)
    out = F.scaled_dot_product_attention(
        q, k, v, dropout_p=dropout_p, scale=scale)
    return out if key_bias is None else out[..., :head_dim]


def with_bias_channel(q: Tensor, k: Tensor, v: Tensor, scale: float,
                      key_bias: Optional[Tensor]
                      ) -> Tuple[Tensor, Tensor, Tensor, float]:
    """``q, k, v, scale`` for a kernel without bias: the per-key bias as one
    more channel (q' = [q * scale, 1], k' = [k, bias], v' = [v, 0], scale
    1), padded with zeros to a multiple of 8. Unchanged without a bias; the
    output's channels past ``v``'s are to be cut off."""
    if key_bias is None:
        return q, k, v, scale
    head_dim = q.shape[-1]
    extra = 8 - head_dim % 8  # at least the one bias channel
    bias = key_bias.to(k.dtype)[:, None, :, None].expand(*k.shape[:-1], 1)
    q = F.pad(torch.cat([q * scale, torch.ones_like(q[..., :1])], -1),
              (0, extra - 1))
    k = F.pad(torch.cat([k, bias], -1), (0, extra - 1))
    v = F.pad(v, (0, extra))
    return q, k, v, 1.


def pad_head_dim(q: Tensor, k: Tensor, v: Tensor,
                 multiple: int = 8,
                 least: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """q, k, v with zero channels up to a multiple of ``multiple`` and at
    least ``least``: the dot products and the output's first channels are
    unchanged."""
    width = max(-(-q.shape[-1] // multiple) * multiple, least)
    extra = width - q.shape[-1]
    if not extra:
        return q, k, v
    return tuple(F.pad(t, (0, extra)) for t in (q, k, v))
