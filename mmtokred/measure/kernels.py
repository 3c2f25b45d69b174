"""Attention kernels side by side at one shape: what the choice of
:func:`mmtokred.ops.attention.cpu_kernel` (CPU half precision) and of
:func:`mmtokred.ops.packed_attention.packed_kernel` (packed batches) is worth
on this machine, and the way a key bias is added; the measurements that
make the choices on a GPU (:func:`choose_packed_kernel`,
:func:`choose_key_bias_mode`)."""
import statistics
import warnings
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ..ops.attention import (KEY_BIAS_MODES, attention, cpu_kernel_set_to,
                             key_bias_mode_set_to, record_key_bias_choice)
from ..ops.packed_attention import (PACKED_KERNELS, kernel_refusal,
                                    packed_attention, record_packed_choice)
from .forward import interleaved_times


def attention_kernel_ms(shape: Sequence[int], dtype: torch.dtype,
                        repeats: int = 3) -> Dict[str, float]:
    """Milliseconds of one attention call ``(B, H, N, D)`` ``shape`` in
    ``dtype`` on the CPU with each kernel ('fused', 'blocked'), the median
    of ``repeats`` taking turns after one warm-up."""
    dim = shape[-1]
    q, k, v, _ = _attention_inputs(shape, torch.device('cpu'), dtype)

    def call(kernel: str) -> Callable[[], None]:
        def run() -> None:
            with cpu_kernel_set_to(kernel), torch.inference_mode():
                attention(q, k, v, dim**-0.5)
        return run

    times = interleaved_times({kernel: call(kernel)
                               for kernel in ('fused', 'blocked')},
                              1, repeats)
    return {kernel: 1000 * statistics.median(spent)
            for kernel, spent in times.items()}


def _attention_inputs(shape: Sequence[int], device: torch.device,
                      dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """Seeded q, k, v of ``(B, H, N, D)`` ``shape`` in ``dtype`` (views of
    one ``(B, N, 3, H, D)`` tensor, as the backbone's attention makes
    them) and a ``(B, N)`` log-size key bias, on ``device``."""
    batch, heads, tokens, dim = shape
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(batch, tokens, 3, heads, dim, generator=generator)
    q, k, v = qkv.to(device, dtype).permute(2, 0, 3, 1, 4).unbind(0)
    bias = torch.rand(batch, tokens, generator=generator).mul(3).add(1).log()
    return q, k, v, bias.to(device)


def key_bias_ms(shape: Sequence[int], device: torch.device,
                dtype: torch.dtype = torch.float32,
                repeats: int = 3) -> Dict[str, float]:
    """Milliseconds of one :func:`~mmtokred.ops.attention.attention` call
    ``(B, H, N, D)`` ``shape`` with a log-size key bias added each way of
    :data:`~mmtokred.ops.attention.KEY_BIAS_MODES` ('mask', 'channel'), the
    median of ``repeats`` taking turns after one warm-up."""
    dim = shape[-1]
    q, k, v, bias = _attention_inputs(shape, device, dtype)

    def call(mode: str) -> Callable[[], None]:
        def run() -> None:
            with key_bias_mode_set_to(mode), torch.inference_mode():
                attention(q, k, v, dim**-0.5, bias)
            if q.is_cuda:
                torch.cuda.synchronize(q.device)
        return run

    times = interleaved_times({mode: call(mode)
                               for mode in KEY_BIAS_MODES[1:]}, 1, repeats)
    return {mode: 1000 * statistics.median(spent)
            for mode, spent in times.items()}


def choose_key_bias_mode(shape: Sequence[int], device: torch.device,
                         dtype: torch.dtype = torch.float32,
                         repeats: int = 3) -> Tuple[str, Dict[str, float]]:
    """Time both key bias modes at ``shape`` (:func:`key_bias_ms`) and
    record the faster for ``device``'s type and ``dtype``: 'auto' adds the
    bias that way from now on. Returns the mode and both modes' ms."""
    ms = key_bias_ms(shape, device, dtype, repeats)
    fastest = min(ms, key=ms.get)
    record_key_bias_choice(device, dtype, fastest)
    return fastest, ms


def packed_kernel_ms(lengths: Sequence[int], heads: int, dim: int,
                     device: torch.device = torch.device('cpu'),
                     kernels: Sequence[str] = PACKED_KERNELS[1:],
                     repeats: int = 3,
                     dtype: torch.dtype = torch.float32,
                     key_bias: bool = False) -> Dict[str, Optional[float]]:
    """Milliseconds of one packed attention call over clips of ``lengths``
    (``heads`` heads of ``dim`` channels, in ``dtype``, with a log-size key
    bias where ``key_bias``) with each of ``kernels``, the median of
    ``repeats`` taking turns after one warm-up (which compiles 'flex'). A
    kernel that cannot run here gets None: silently where it does not run
    on this device or dtype (:func:`kernel_refusal`), else its error is
    warned."""
    q, k, v, bias = _attention_inputs((1, heads, sum(lengths), dim),
                                      torch.device(device), dtype)
    bias = bias if key_bias else None

    def call(kernel: str) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                packed_attention(q, k, v, dim**-0.5, lengths, bias,
                                 kernel=kernel)
            if q.is_cuda:  # the call's time, not its launch's
                torch.cuda.synchronize(q.device)
        return run

    runnable = {}
    for kernel in kernels:
        if kernel_refusal(kernel, q, 0.):
            continue
        try:
            call(kernel)()
        except Exception as error:  # noqa: BLE001  (no compiler, no kernel)
            warnings.warn(f'packed attention kernel {kernel!r} cannot run '
                          f'here: {type(error).__name__}: {error}'
                          .splitlines()[0])
            continue
        runnable[kernel] = call(kernel)
    times = interleaved_times(runnable, 1, repeats) if runnable else {}
    return {kernel: 1000 * statistics.median(times[kernel])
            if kernel in times else None for kernel in kernels}


def choose_packed_kernel(lengths: Sequence[int], heads: int, dim: int,
                         device: torch.device,
                         dtype: torch.dtype = torch.float32,
                         key_bias: bool = False,
                         repeats: int = 3
                         ) -> Tuple[str, Dict[str, Optional[float]]]:
    """Time every packed kernel at these shapes (:func:`packed_kernel_ms`)
    and record the fastest for ``device``'s type and ``dtype``: 'auto'
    runs it from now on (:func:`~mmtokred.ops.packed_attention.
    record_packed_choice`). Returns the kernel and every kernel's ms.
    Outside any forward pass: a tool or hook calls it before the model
    runs."""
    ms = packed_kernel_ms(lengths, heads, dim, device, PACKED_KERNELS[1:],
                          repeats, dtype, key_bias)
    timed = {kernel: t for kernel, t in ms.items() if t is not None}
    if not timed:
        raise RuntimeError(f'no packed attention kernel runs on {device} '
                           f'in {dtype}: {ms}')
    fastest = min(timed, key=timed.get)
    record_packed_choice(device, dtype, fastest)
    return fastest, ms
