"""Peak memory of one forward pass, above what model and input already hold.

CUDA: the allocator's peak of allocated bytes; the models compared share the
device, so a model's total leaves out what the others hold there
(:func:`cuda_peaks`), which makes it comparable with the CPU figure. CPU:
the process's peak resident set (VmHWM, reset through /proc/self/clear_refs
just before the forward pass) in a fresh process whose allocator returns
freed blocks to the system at once (MALLOC_MMAP_THRESHOLD_), so the peak
seen is that of the forward pass and not of whatever ran before it.
"""
import gc
import json
import os
import subprocess
import sys
from typing import Callable, Dict

import torch

from .forward import forward_fn, prepare

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
        raise RuntimeError('CPU peak memory needs Linux (/proc/self/clear_refs)')
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


def peak_memory_fresh_process(spec: Dict) -> Dict[str, float]:
    """:func:`peak_memory` of a variant in a fresh Python process.

    ``spec`` holds ``config``, ``cfg_options``, ``variant``, ``weights`` and
    ``inputs`` (files saved by the caller), ``amp``, ``dtype`` and
    ``compile`` (as for :func:`~mmtokred.benchmark.forward.prepare`) and
    ``attention_kernel`` (as for
    :func:`mmtokred.ops.attention.set_cpu_kernel`).
    """
    env = {**os.environ, **FRESH_ENV}
    result = subprocess.run(
        [sys.executable, '-m', 'mmtokred.benchmark.memory',
         json.dumps(spec)],
        env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError('memory probe failed:\n' + result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _probe(spec: Dict) -> Dict[str, float]:
    import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
    from mmengine.config import Config

    from ..ops.attention import set_cpu_kernel
    from .variants import build_variant
    set_cpu_kernel(spec['attention_kernel'])
    cfg = Config.fromfile(spec['config'])
    cfg.merge_from_dict(spec['cfg_options'] or {})
    model = build_variant(cfg, spec['variant'])
    model.load_state_dict(torch.load(spec['weights'], weights_only=True))
    prepare(model, spec['dtype'], spec['compile'])
    inputs = torch.load(spec['inputs'], weights_only=True)
    forward = forward_fn(model, inputs, spec['amp'])
    forward()  # one-time work (compilation, kernel caches, thread pools)
    return peak_memory(forward, torch.device('cpu'))


if __name__ == '__main__':
    print(json.dumps(_probe(json.loads(sys.argv[1]))))
