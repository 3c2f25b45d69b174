"""How far a benchmark is from the machine's limit: the nominal peak and the
rate a matrix product of the model's own shapes reaches here.

The nominal CPU peak is counted from /proc/cpuinfo: the clock (the highest
cpufreq reports, else what cpuinfo says, often the base clock), the threads
torch uses (one per core on these machines) and the matrix or vector units
its flags name, two 512-bit FMA pipes per core (Intel since Skylake-SP, AMD
Zen 4/5 execute AVX-512 FMAs at that rate). It is an upper bound no kernel
reaches: AMX's, for one, assumes its tile units never wait for memory. The
achievable rate is measured in the same run, on the same threads and in the
same dtype, with the product that dominates a ViT's work (the MLP's first
layer: tokens x width @ width x 4 width), through every path the models can
take (:func:`product_paths`), the fastest counting.
"""
import statistics
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.linear import MACHINE, onednn_linear
from .cpu import cpuinfo, max_ghz
from .forward import interleaved_times

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


def cpu_peak(dtype: torch.dtype) -> Optional[Dict]:
    """``dict(gflops, unit, ghz, cores)`` of this CPU for matrix
    products in ``dtype``, or None where /proc/cpuinfo does not tell."""
    info = cpuinfo()
    flags = set(info.get('flags', '').split())
    ghz = max_ghz()
    try:
        ghz = ghz or float(info['cpu MHz']) / 1000
    except (KeyError, ValueError):
        return None
    unit = next((u for u in UNITS.get(dtype, ()) if u in flags), None)
    if unit is None:
        return None
    cores = torch.get_num_threads()
    return dict(gflops=FLOPS_PER_CYCLE[unit] * ghz * cores, unit=unit,
                ghz=ghz, cores=cores)


def product_paths(dtype: torch.dtype, device: torch.device
                  ) -> Dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The matrix-product paths of :mod:`mmtokred.ops.linear` that can run
    ``dtype`` on ``device``: 'aten' (``F.linear``; in bf16 and fp16 on CPU
    torch's oneDNN already) and, for fp32 on a CPU where torch has oneDNN,
    'onednn', whichever the models take."""
    paths = {'aten': F.linear}
    if (device.type == 'cpu' and dtype == torch.float32
            and MACHINE.onednn):
        paths['onednn'] = onednn_linear
    return paths


def achievable_rate(dtype: torch.dtype, device: torch.device, rows: int,
                    width: int, repeats: int = 5) -> Dict:
    """The GFLOP/s (2 per multiply-add) of ``(rows, width) @ (width,
    4 width)`` in ``dtype`` on ``device`` through each of
    :func:`product_paths`, taking turns, the median of ``repeats`` after
    one warm-up: ``dict(gflops, path, paths, shape)``, ``gflops`` and
    ``path`` the fastest's, ``paths`` each path's GFLOP/s."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=generator).to(device, dtype)
    weight = torch.randn(4 * width, width, generator=generator).to(
        device, dtype)

    def product(path: Callable[[Tensor, Tensor], Tensor]) -> Callable:
        def run() -> None:
            with torch.inference_mode():
                path(x, weight)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
        return run

    times = interleaved_times(
        {name: product(path)
         for name, path in product_paths(dtype, device).items()}, 1, repeats)
    flops = 2 * rows * width * 4 * width
    paths = {name: flops / statistics.median(ts) / 1e9
             for name, ts in times.items()}
    fastest = max(paths, key=paths.get)
    return dict(gflops=paths[fastest], path=fastest, paths=paths,
                shape=[rows, width, 4 * width])


def machine_limits(dtypes: Dict[str, torch.dtype], device: torch.device,
                   rows: int, width: int) -> Dict[str, Dict]:
    """Per named dtype, the ``achievable`` rate (:func:`achievable_rate`
    at the model's MLP shape: ``rows`` tokens of ``width`` channels) and, on
    CPU, the ``nominal`` peak (:func:`cpu_peak`; None elsewhere)."""
    return {
        name: dict(achievable=achievable_rate(dtype, device, rows, width),
                   nominal=cpu_peak(dtype) if device.type == 'cpu' else None)
        for name, dtype in sorted(dtypes.items())
    }


def limit_lines(peaks: Dict[str, Dict], best: Dict[str, float],
                what: str) -> str:
    """One line per dtype: the nominal peak (from :func:`cpu_peak`, under
    ``nominal``, may be None) and the measured ``achievable`` rate (from
    :func:`achievable_rate`: the fastest path, each path's rate), with the
    share of each that the fastest of ``what`` (e.g. 'model', 'row')
    reached in ``best`` GFLOP/s."""
    lines = []
    for name, peak in peaks.items():
        reached = best[name]
        achievable = peak['achievable']
        # Results saved before the paths were timed have none.
        paths = achievable.get('paths', {})
        fastest = achievable.get('path')
        others = ''.join(f'; {path} {gflops:.0f}'
                         for path, gflops in paths.items()
                         if path != fastest)
        via = f'{fastest}{others}; ' if fastest else ''
        line = (f"{name} limit: achievable {achievable['gflops']:.0f} "
                f'GFLOP/s ({via}measured here: a ' + ' x '.join(
                    map(str, achievable['shape'][:2])) + ' @ ' + ' x '.join(
                    map(str, achievable['shape'][1:])) + ' product); the '
                f'fastest {what} reaches '
                f"{100 * reached / achievable['gflops']:.0f}% of it")
        nominal = peak.get('nominal')
        if nominal:
            line += (f"; nominal {nominal['gflops']:.0f} GFLOP/s "
                     f"({nominal['unit']}, {nominal['cores']} cores at "
                     f"{nominal['ghz']:.2f} GHz): "
                     f"{100 * reached / nominal['gflops']:.0f}%")
        lines.append(line)
    return '\n'.join(lines)
