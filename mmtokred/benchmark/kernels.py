"""The CPU attention kernels side by side at one shape: what the choice of
:func:`mmtokred.ops.attention.cpu_kernel` is worth on this machine."""
import statistics
import time
from typing import Dict, Sequence

import torch

from ..ops.attention import attention, cpu_kernel_set_to


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
    times: Dict[str, list] = {'fused': [], 'blocked': []}
    with torch.inference_mode():
        for turn in range(repeats + 1):
            for kernel, spent in times.items():
                with cpu_kernel_set_to(kernel):
                    start = time.perf_counter()
                    attention(q, k, v, dim**-0.5)
                    if turn:  # the first turn warms up
                        spent.append(time.perf_counter() - start)
    return {kernel: 1000 * statistics.median(spent)
            for kernel, spent in times.items()}
