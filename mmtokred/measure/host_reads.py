"""How often a forward pass makes the host wait for the device.

Each read of a tensor's value by Python (``int()``, ``.item()``, ``bool()``
of a tensor, ``.tolist()``) waits on a GPU for the work queued before it.
:class:`HostReads` counts them on any device (on CPU as well, where they
cost nothing but show where a GPU would wait); :class:`CudaSyncs` counts
every synchronising CUDA call torch reports (host-to-device copies from
pageable memory too). Tools observe with them; the model never does.
"""
import warnings
from typing import List

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode


class HostReads(TorchDispatchMode):
    """Counts, while active, the ``aten._local_scalar_dense`` calls (what
    ``int()``, ``.item()`` and ``bool()`` of a tensor run) and the
    ``Tensor.tolist()`` calls (which read without dispatching).

    A compiled function runs eagerly under a dispatch mode: count compiled
    code with :class:`CudaSyncs` on a GPU instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._tolist = Tensor.tolist

    def __enter__(self) -> 'HostReads':
        reads, tolist = self, self._tolist

        def counted_tolist(tensor: Tensor):
            reads.count += 1
            return tolist(tensor)

        Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        Tensor.tolist = self._tolist
        return super().__exit__(*exc_info)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class CudaSyncs:
    """Counts, while active, the synchronising CUDA calls torch warns of
    under ``torch.cuda.set_sync_debug_mode('warn')``."""

    def __init__(self) -> None:
        self.count = 0
        self.messages: List[str] = []
        self._caught = None

    def __enter__(self) -> 'CudaSyncs':
        torch.cuda.synchronize()
        self._caught = warnings.catch_warnings(record=True)
        self._records = self._caught.__enter__()
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        return self

    def __exit__(self, *exc_info) -> None:
        torch.cuda.set_sync_debug_mode(0)
        self._caught.__exit__(*exc_info)
        self.messages = [str(w.message) for w in self._records
                         if 'synchroniz' in str(w.message)]
        self.count = len(self.messages)
