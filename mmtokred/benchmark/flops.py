"""FLOPs of a forward pass, attention included.

mmengine's counter has no handle for ``scaled_dot_product_attention`` and
counts nothing for it; PyTorch's FlopCounterMode knows the CUDA kernels but
not the CPU one. Both are counted here.
"""
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args,
                    **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: Attention kernels FlopCounterMode leaves uncounted.
_EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
}


@torch.no_grad()
def count_gflops(forward: Callable[[], object]) -> float:
    """GFLOPs of ``forward()`` in multiply-accumulates (the MMAction2 model
    zoo's and mmengine's convention: ViT-B VideoMAE 16x224 is about 180)."""
    with FlopCounterMode(display=False,
                         custom_mapping=_EXTRA_FORMULAS) as counter:
        forward()
    # FlopCounterMode counts a multiply-accumulate as 2 FLOPs.
    return counter.get_total_flops() / 2 / 1e9
