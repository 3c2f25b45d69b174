"""The CPU attention kernels side by side at one shape: what the choice of
:func:`mmtokred.ops.attention.cpu_kernel` is worth on this machine."""
import statistics
from typing import Callable, Dict, Sequence

import torch

from ..ops.attention import attention, cpu_kernel_set_to
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
