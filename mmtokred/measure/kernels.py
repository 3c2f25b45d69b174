"""Attention kernels side by side at one shape: what the choice of
:func:`mmtokred.ops.attention.cpu_kernel` (CPU half precision) and of
:func:`mmtokred.ops.packed.packed_kernel` (packed batches) is worth on this
machine."""
import statistics
import warnings
from typing import Callable, Dict, Sequence

import torch

from ..ops.attention import attention, cpu_kernel_set_to
from ..ops.packed import PACKED_KERNELS, packed_attention
from .forward import interleaved_times


def attention_kernel_ms(shape: Sequence[int], dtype: torch.dtype,
                        repeats: int = 3) -> Dict[str, float]:
    """Milliseconds of one attention call ``(B, H, N, D)`` ``shape`` in
    ``dtype`` on the CPU with each kernel ('fused', 'blocked'), the median
    of ``repeats`` taking turns after one warm-up. q, k and v are views of
    one ``(B, N, 3, H, D)`` tensor, as the backbone's attention makes
    them."""
    batch, heads, tokens, dim = shape
    qkv = torch.randn(batch, tokens, 3, heads, dim,
                      generator=torch.Generator().manual_seed(0)).to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)

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


def packed_kernel_ms(lengths: Sequence[int], heads: int, dim: int,
                     device: torch.device = torch.device('cpu'),
                     kernels: Sequence[str] = PACKED_KERNELS[1:],
                     repeats: int = 3) -> Dict[str, float]:
    """Milliseconds of one packed attention call over clips of ``lengths``
    (``heads`` heads of ``dim`` channels, fp32) with each of ``kernels``,
    the median of ``repeats`` taking turns after one warm-up (which
    compiles 'flex'). A kernel that cannot run here gets NaN, and its
    error is warned."""
    total = sum(lengths)
    qkv = torch.randn(1, total, 3, heads, dim,
                      generator=torch.Generator().manual_seed(0)).to(device)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def call(kernel: str) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                packed_attention(q, k, v, dim**-0.5, lengths, kernel=kernel)
            if q.is_cuda:  # the call's time, not its launch's
                torch.cuda.synchronize(q.device)
        return run

    runnable = {}
    for kernel in kernels:
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
            if kernel in times else float('nan') for kernel in kernels}
