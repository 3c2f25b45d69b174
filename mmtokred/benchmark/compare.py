"""Measure ours, dense and stock side by side in one run."""
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.config import Config
from torch import Tensor, nn

from .flops import count_gflops
from .memory import peak_memory, peak_memory_fresh_process
from .variants import build_variants


def forward_fn(model: nn.Module, inputs: Tensor,
               amp: bool) -> Callable[[], Tensor]:
    """The measured work: the recogniser's backbone and head on ``inputs``
    ``(B, views, C, T, H, W)``, without data loading or preprocessing."""
    device_type = inputs.device.type
    dtype = torch.float16 if device_type == 'cuda' else torch.bfloat16

    def forward() -> Tensor:
        with torch.inference_mode(), torch.autocast(
                device_type, dtype=dtype, enabled=amp):
            out = model(inputs, mode='tensor', stage='head')
        if device_type == 'cuda':
            torch.cuda.synchronize(inputs.device)
        return out

    return forward


def _device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu ({torch.get_num_threads()} threads)'


def seconds_per_batch(forwards: Dict[str, Callable], warmup: int,
                       repeats: int) -> Dict[str, float]:
    """Median wall time of each forward; the models take turns in every
    repetition so that a noisy neighbour hurts all of them alike."""
    for forward in forwards.values():
        for _ in range(warmup):
            forward()
    times: Dict[str, List[float]] = {name: [] for name in forwards}
    for _ in range(repeats):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _reduction_overhead(model: nn.Module, forward: Callable,
                        repeats: int) -> Optional[float]:
    """Median fraction of a forward pass spent in the token reducers (in a
    separate, synchronised pass: timing them slows the measured runs)."""
    backbone = model.backbone
    if getattr(backbone, 'input_reducer', None) is None and getattr(
            backbone, 'block_reducer', None) is None:
        return None
    fractions = []
    backbone.time_reductions = True
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            forward()
            fractions.append(backbone.reduction_seconds /
                             (time.perf_counter() - start))
    finally:
        backbone.time_reductions = False
    return statistics.median(fractions)


def _branch_counts(model: nn.Module, forward: Callable) -> Dict[str, int]:
    """Branches the reducers took in one forward pass (e.g. PPT's pool and
    prune decisions per clip and block)."""
    reducers = [
        getattr(model.backbone, name, None)
        for name in ('input_reducer', 'block_reducer')
    ]
    reducers = [reducer for reducer in reducers if reducer is not None]
    for reducer in reducers:
        reducer.reset_counts()
    forward()
    counts: Dict[str, int] = {}
    for reducer in reducers:
        counts.update(reducer.branch_counts())
    return counts


def compare(config: str,
            checkpoint: Optional[str] = None,
            cfg_options: Optional[Dict] = None,
            device: str = 'cpu',
            batch_size: int = 1,
            input_shape: Optional[Sequence[int]] = None,
            warmup: int = 1,
            repeats: int = 3,
            amp: bool = False) -> Dict:
    """Benchmark ``config``'s model against stock MMAction2 (and against its
    own backbone with reduction off) on synthetic clips.

    Args:
        input_shape: ``(T, H, W)`` of a clip; defaults to the backbone's
            ``num_frames`` and ``img_size``.

    Returns:
        A dict with per-model figures under ``models``, the ratios
        ``speedup_vs_stock``, ``speedup_vs_dense``, ``flops_ratio_vs_stock``
        and ``peak_mem_ratio_vs_stock`` (ours / stock), and
        ``reduction_overhead`` (fraction of our forward pass spent in the
        reducers; None without reduction).
    """
    for name, value, low in (('batch_size', batch_size, 1),
                             ('warmup', warmup, 0), ('repeats', repeats, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    backbone = cfg.model.backbone
    if input_shape is None:
        input_shape = (backbone.get('num_frames', 16),
                       backbone.get('img_size', 224),
                       backbone.get('img_size', 224))
    dev = torch.device(device)
    models = build_variants(cfg, checkpoint)
    generator = torch.Generator().manual_seed(0)
    clip_shape = (1, backbone.get('in_channels', 3), *input_shape)
    inputs = torch.randn(batch_size, *clip_shape, generator=generator)

    forwards = {}
    for name, model in models.items():
        model.to(dev)
        forwards[name] = forward_fn(model, inputs.to(dev), amp)
    outputs = {name: forward().float().cpu() for name, forward in
               forwards.items()}
    reference = 'dense' if 'dense' in models else 'ours'
    figures: Dict[str, Dict] = {name: {} for name in models}
    for name, model in models.items():
        one_clip = forward_fn(model, inputs[:1].to(dev), amp)
        figures[name]['gflops_per_clip'] = count_gflops(one_clip)
        blocks = getattr(model.backbone, 'tokens_per_block', None)
        figures[name]['tokens_per_block'] = list(blocks) if blocks else None

    seconds = seconds_per_batch(forwards, warmup, repeats)
    for name, value in seconds.items():
        figures[name]['seconds_per_batch'] = value
        figures[name]['clips_per_s'] = batch_size / value
    overhead = _reduction_overhead(models['ours'], forwards['ours'], repeats)
    figures['ours']['branch_counts'] = _branch_counts(models['ours'],
                                                      forwards['ours'])

    if dev.type == 'cuda':
        for name, forward in forwards.items():
            figures[name].update(peak_memory(forward, dev))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(inputs, Path(tmp) / 'inputs.pth')
            torch.save(models['ours'].state_dict(), Path(tmp) / 'weights.pth')
            for name in models:
                figures[name].update(
                    peak_memory_fresh_process(
                        dict(config=str(config), cfg_options=cfg_options,
                             variant=name, amp=amp,
                             weights=str(Path(tmp) / 'weights.pth'),
                             inputs=str(Path(tmp) / 'inputs.pth'))))

    ours, stock = figures['ours'], figures['stock']
    dense = figures.get('dense', ours)
    return dict(
        config=str(config),
        device=_device_name(dev),
        input_shape=list(inputs.shape),
        amp=amp,
        warmup=warmup,
        repeats=repeats,
        models=figures,
        max_abs_diff_dense_vs_stock=float(
            (outputs[reference] - outputs['stock']).abs().max()),
        speedup_vs_stock=stock['seconds_per_batch'] /
        ours['seconds_per_batch'],
        speedup_vs_dense=dense['seconds_per_batch'] /
        ours['seconds_per_batch'],
        flops_ratio_vs_stock=ours['gflops_per_clip'] /
        stock['gflops_per_clip'],
        peak_mem_ratio_vs_stock=ours['activation_mib'] /
        stock['activation_mib'],
        total_mem_ratio_vs_stock=ours['total_mib'] / stock['total_mib'],
        reduction_overhead=overhead,
    )


def format_table(result: Dict) -> str:
    """The figures of :func:`compare` as a plain-text table."""
    header = (f"{'model':<6} {'clips/s':>9} {'s/batch':>9} {'GFLOPs':>9} "
              f"{'peak MiB':>9} {'total MiB':>10}  tokens per block")
    lines = [
        f"{result['config']} on {result['device']}, input "
        f"{tuple(result['input_shape'])}, amp={result['amp']}", header,
        '-' * len(header)
    ]
    for name, fig in result['models'].items():
        tokens = fig['tokens_per_block']
        tokens = ','.join(map(str, tokens)) if tokens else '-'
        lines.append(f"{name:<6} {fig['clips_per_s']:>9.3f} "
                     f"{fig['seconds_per_batch']:>9.3f} "
                     f"{fig['gflops_per_clip']:>9.2f} "
                     f"{fig['activation_mib']:>9.1f} "
                     f"{fig['total_mib']:>10.1f}  {tokens}")
    lines.append(
        f"ours vs stock: speedup {result['speedup_vs_stock']:.2f}x, FLOPs "
        f"{result['flops_ratio_vs_stock']:.3f}, peak memory "
        f"{result['peak_mem_ratio_vs_stock']:.3f} (total "
        f"{result['total_mem_ratio_vs_stock']:.3f}); ours vs dense: speedup "
        f"{result['speedup_vs_dense']:.2f}x; max |dense - stock| = "
        f"{result['max_abs_diff_dense_vs_stock']:.2e}")
    if result['reduction_overhead'] is not None:
        lines.append('time in the token reducers: '
                     f"{100 * result['reduction_overhead']:.1f}% of the "
                     'forward pass')
    counts = result['models']['ours'].get('branch_counts')
    if counts:
        lines.append('branches taken in one forward pass: ' + ', '.join(
            f'{name} {count}' for name, count in counts.items()))
    return '\n'.join(lines)
