"""The machine's arithmetic peak, so a benchmark can say how far it is from
the limit.

CPU peaks are counted from /proc/cpuinfo: the clock it reports, the threads
torch uses (one per core on these machines) and the matrix or vector units
its flags name. Two 512-bit FMA pipes per core are assumed (Intel since
Skylake-SP, AMD Zen 4/5 execute AVX-512 FMAs at that rate): an upper bound,
turbo and throttling aside.
"""
from typing import Dict, Optional

import torch

#: FLOPs per cycle and core, by the best unit a flag names.
FLOPS_PER_CYCLE = {
    # AMX TMUL: 1024 bf16 multiply-adds per cycle.
    'amx_bf16': 2048,
    # AVX512_BF16 VDPBF16PS: 32 bf16 products summed into 16 fp32, 2 pipes.
    'avx512_bf16': 128,
    # AVX512_FP16: 32 fp16 FMAs per instruction, 2 pipes.
    'avx512_fp16': 128,
    # AVX-512 fp32: 16 FMAs per instruction, 2 pipes.
    'avx512f': 64,
    # AVX2 fp32: 8 FMAs per instruction, 2 pipes.
    'avx2': 32,
}
#: The units that can run each dtype, best first.
UNITS = {
    torch.float32: ('avx512f', 'avx2'),
    torch.bfloat16: ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2'),
    torch.float16: ('avx512_fp16', 'avx512f', 'avx2'),
}


def _cpuinfo() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_peak(dtype: torch.dtype) -> Optional[Dict]:
    """``dict(gflops, unit, ghz, cores)`` of this CPU for matrix products in
    ``dtype``, or None where /proc/cpuinfo does not tell."""
    info = _cpuinfo()
    flags = set(info.get('flags', '').split())
    try:
        ghz = float(info['cpu MHz']) / 1000
    except (KeyError, ValueError):
        return None
    unit = next((u for u in UNITS.get(dtype, ()) if u in flags), None)
    if unit is None:
        return None
    cores = torch.get_num_threads()
    return dict(gflops=FLOPS_PER_CYCLE[unit] * ghz * cores, unit=unit,
                ghz=ghz, cores=cores)


def peak_line(peak: Dict, best_gflops_per_s: float, what: str) -> str:
    """The machine's peak (from :func:`cpu_peak`) and the share of it the
    fastest of ``what`` (e.g. 'model', 'row') reached."""
    return (f"machine peak {peak['gflops']:.0f} GFLOP/s ({peak['unit']}, "
            f"{peak['cores']} cores at {peak['ghz']:.2f} GHz, 2 FMA pipes "
            f"each): the fastest {what} here reaches "
            f"{100 * best_gflops_per_s / peak['gflops']:.0f}% of it")
