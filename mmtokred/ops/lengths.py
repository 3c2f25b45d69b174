"""The host lengths of a packed batch as device tensors, without a wait.

A packed batch keeps its clips' token counts on the host (every slice of a
clip is a shape); kernels and pooling need them on the device too. A copy
from pageable host memory to a GPU waits for the device (it is what
``torch.tensor(values, device='cuda')`` does), so these go through pinned
memory, asynchronously.
"""
from typing import Sequence

import torch
from torch import Tensor


def device_ints(values: Sequence[int], device: torch.device,
                dtype: torch.dtype = torch.int64) -> Tensor:
    """Host integers as a tensor on ``device``, without waiting for it: on
    CUDA through pinned memory, copied asynchronously (a copy from pageable
    memory waits for the device, as ``torch.tensor(values, device=...)``
    does)."""
    tensor = torch.tensor(list(values), dtype=dtype)
    device = torch.device(device)
    if device.type == 'cpu':
        return tensor
    if device.type == 'cuda':
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def cumulative_offsets(lengths: Sequence[int], device: torch.device,
                       dtype: torch.dtype = torch.int64) -> Tensor:
    """``(B + 1,)`` offsets of the clips in the packed sequence, 0 first,
    on ``device`` (:func:`device_ints`)."""
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return device_ints(offsets, device, dtype)


def clip_index(lengths: Sequence[int], device: torch.device) -> Tensor:
    """``(sum(lengths),)`` the clip each token of the packed sequence is
    of."""
    return torch.repeat_interleave(
        torch.arange(len(lengths), device=device),
        device_ints(lengths, device), output_size=sum(lengths))
