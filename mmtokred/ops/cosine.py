"""Cosine similarities between token sets, in fp32 whatever autocast does.

Reducers rank tokens by these similarities and by sums of them (over up to
1568 tokens). Under fp16 autocast a matrix product of fp32 inputs still runs
in fp16, where such a sum steps by 1.0 and scores tie; so autocast is turned
off around the product.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_similarities(a: Tensor, b: Tensor) -> Tensor:
    """``(B, N, M)`` fp32 cosine similarity of every token of ``a``
    ``(B, N, D)`` with every token of ``b`` ``(B, M, D)``."""
    device_type = a.device.type
    with (torch.autocast(device_type, enabled=False)
          if torch.amp.is_autocast_available(device_type) else
          contextlib.nullcontext()):
        a = F.normalize(a.float(), dim=-1)
        b = F.normalize(b.float(), dim=-1)
        return a @ b.transpose(-1, -2)
