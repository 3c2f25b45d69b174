"""Peak memory of one forward pass, above what model and input already hold.

CUDA: the allocator's peak of allocated bytes; the models compared share the
device, so a model's total leaves out what the others hold there
(:func:`cuda_peaks`), which makes it comparable with the CPU figure. CPU:
the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
just before the forward pass) in a fresh process whose allocator returns
freed blocks to the system at once (MALLOC_MMAP_THRESHOLD_), so the peak
seen is that of the forward pass and not of whatever ran before it.
:class:`MemoryProbe` measures several forwards the one way or the other.
"""
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict

import torch

#: Environment of a fresh process measuring a peak: glibc maps large blocks
#: and trims at once, so the resident peak is the forward pass's own.
FRESH_ENV = {'MALLOC_MMAP_THRESHOLD_': '65536', 'MALLOC_TRIM_THRESHOLD_': '0'}


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}')


def peak_memory(forward: Callable[[], object],
                device: torch.device) -> Dict[str, float]:
    """Run ``forward()`` once; return ``activation_mib`` (its own peak above
    what was held before) and ``total_mib`` (everything held at the peak)."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        forward()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return dict(activation_mib=(peak - before) / 2**20,
                    total_mib=peak / 2**20)
    if not os.path.exists('/proc/self/clear_refs'):
        raise RuntimeError('CPU peak memory needs Linux '
                           '(/proc/self/clear_refs)')
    before = _status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as clear_refs:
        clear_refs.write('5')  # resets VmHWM to the current RSS
    forward()
    peak = _status_kib('VmHWM')
    return dict(activation_mib=(peak - before) / 1024, total_mib=peak / 1024)


def allocated_bytes(device: torch.device) -> int:
    """Bytes the CUDA allocator holds on ``device`` (0 elsewhere): what a
    model moved there adds is its resident size for :func:`cuda_peaks`."""
    return torch.cuda.memory_allocated(device) if device.type == 'cuda' \
        else 0


def cuda_peaks(forwards: Dict[str, Callable[[], object]],
               resident: Dict[str, int],
               device: torch.device) -> Dict[str, Dict[str, float]]:
    """:func:`peak_memory` of each forward on one CUDA device, its
    ``total_mib`` without the bytes ``resident`` says the other models (their
    weights and inputs) hold there."""
    peaks = {}
    for name, forward in forwards.items():
        peak = peak_memory(forward, device)
        others = sum(held for other, held in resident.items()
                     if other != name) / 2**20
        peaks[name] = dict(peak, total_mib=peak['total_mib'] - others)
    return peaks


def peak_memory_fresh_process(builder: str, spec: Dict) -> Dict[str, float]:
    """:func:`peak_memory` of a forward built in a fresh Python process.

    ``builder`` names a function (``'module:function'``) that the process
    calls with ``spec`` (JSON) to build the forward; one untimed call does
    the one-time work (compilation, kernel caches, thread pools) before the
    measured one.
    """
    result = subprocess.run(
        [sys.executable, '-m', 'mmtokred.measure.memory', builder,
         json.dumps(spec)],
        env={**os.environ, **FRESH_ENV}, capture_output=True, text=True,
        check=False)
    if result.returncode != 0:
        raise RuntimeError('memory probe failed:\n' + result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class MemoryProbe:
    """How the peak memory of each of several forwards is measured: on CUDA
    in this process (:func:`cuda_peaks`, ``resident``: the bytes each model
    holds on the device, from :func:`allocated_bytes`), on CPU in a fresh
    process per forward (:func:`peak_memory_fresh_process` with
    ``builder``; ``specs(folder)`` saves the weights and inputs its specs
    name under ``folder`` and returns the spec of each forward)."""

    builder: str
    specs: Callable[[Path], Dict[str, Dict]]
    resident: Dict[str, int] = field(default_factory=dict)

    def peaks(self, forwards: Dict[str, Callable[[], object]],
              device: torch.device) -> Dict[str, Dict[str, float]]:
        """``activation_mib`` and ``total_mib`` (:func:`peak_memory`) of
        each forward."""
        if device.type == 'cuda':
            return cuda_peaks(forwards, self.resident, device)
        with tempfile.TemporaryDirectory() as folder:
            specs = self.specs(Path(folder))
            return {name: peak_memory_fresh_process(self.builder,
                                                    specs[name])
                    for name in forwards}


def _probe(builder: str, spec: Dict) -> Dict[str, float]:
    module, _, function = builder.partition(':')
    forward = getattr(importlib.import_module(module), function)(spec)
    forward()  # one-time work, not the forward pass's own
    return peak_memory(forward, torch.device('cpu'))


if __name__ == '__main__':
    print(json.dumps(_probe(sys.argv[1], json.loads(sys.argv[2]))))
