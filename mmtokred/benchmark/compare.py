"""Measure ours, dense and stock side by side in one run."""
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from torch import nn

from .flops import count_gflops
from .forward import (DTYPES, autocast_dtype, device_name, forward_fn,
                      prepare, seconds_per_batch)
from .memory import peak_memory, peak_memory_fresh_process
from .observe import ReducerTimer, TokenRecorder
from .peak import cpu_peak, peak_line
from .variants import build_variants


def _reduction_overhead(model: nn.Module, forward: Callable,
                        repeats: int) -> Optional[float]:
    """Median fraction of a forward pass spent in the token reducers (in a
    separate, synchronised pass: timing them slows the measured runs)."""
    backbone = model.backbone
    if backbone.input_reducer is None and backbone.block_reducer is None:
        return None
    fractions = []
    with ReducerTimer(backbone) as timer:
        for _ in range(repeats):
            timer.reset()
            forward()
            fractions.append(timer.fraction)
    return statistics.median(fractions)


def _branch_counts(model: nn.Module, forward: Callable) -> Dict[str, int]:
    """Branches the reducers took in one forward pass (e.g. PPT's pool and
    prune decisions per clip and block)."""
    backbone = model.backbone
    reducers = [reducer for reducer in (backbone.input_reducer,
                                        backbone.block_reducer)
                if reducer is not None]
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
            amp: bool = False,
            dtype: str = 'fp32',
            compile: bool = False,
            stock_fp32: bool = False) -> Dict:
    """Benchmark ``config``'s model against stock MMAction2 (and against its
    own backbone with reduction off) on synthetic clips.

    Args:
        input_shape: ``(T, H, W)`` of a clip; defaults to the backbone's
            ``num_frames`` and ``img_size``.
        amp: run under autocast (fp16 on GPU, bf16 on CPU).
        dtype: cast every model's weights and the clips (``DTYPES``).
        compile: ``torch.compile`` every model's backbone (after FLOPs and
            tokens are counted; the warm-up passes compile).
        stock_fp32: run stock as MMAction2 ships it (fp32, eager) whatever
            the others run in, so ``speedup_vs_stock`` is the whole gain.

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
    if amp and dtype != 'fp32':
        raise ValueError(f'amp autocasts fp32 weights; it cannot be combined '
                         f'with dtype={dtype!r}')
    if compile and warmup < 1:
        raise ValueError('compile needs warmup >= 1 (the first pass '
                         'compiles)')
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

    def setting(name: str) -> Tuple[str, bool, bool]:
        """(dtype, amp, compile) of a model."""
        if name == 'stock' and stock_fp32:
            return 'fp32', False, False
        return dtype, amp, compile

    forwards = {}
    for name, model in models.items():
        prepare(model.to(dev), setting(name)[0])
        forwards[name] = forward_fn(model, inputs.to(dev), setting(name)[1])
    outputs = {name: forward().float().cpu() for name, forward in
               forwards.items()}
    reference = 'dense' if 'dense' in models else 'ours'
    figures: Dict[str, Dict] = {name: {} for name in models}
    for name, model in models.items():
        one_clip = forward_fn(model, inputs[:1].to(dev), setting(name)[1])
        figures[name]['gflops_per_clip'] = count_gflops(one_clip)
        figures[name]['tokens_per_block'] = None
        if hasattr(model.backbone, 'block_reducer'):  # ours, not stock
            with TokenRecorder(model.backbone) as recorder:
                one_clip()
            figures[name]['tokens_per_block'] = recorder.tokens_per_block
    overhead = _reduction_overhead(models['ours'], forwards['ours'], repeats)
    figures['ours']['branch_counts'] = _branch_counts(models['ours'],
                                                      forwards['ours'])
    for name, model in models.items():
        if setting(name)[2]:
            prepare(model, dtype, compile=True)

    seconds = seconds_per_batch(forwards, warmup, repeats)
    for name, value in seconds.items():
        figures[name]['seconds_per_batch'] = value
        figures[name]['clips_per_s'] = batch_size / value
        # GFLOPs per clip count multiply-accumulates (the model zoo's
        # convention); a machine's peak counts 2 FLOPs per multiply-add.
        figures[name]['gflops_per_s'] = (2 * figures[name]['gflops_per_clip']
                                         * batch_size / value)
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
                             variant=name, amp=setting(name)[1],
                             dtype=setting(name)[0],
                             compile=setting(name)[2],
                             weights=str(Path(tmp) / 'weights.pth'),
                             inputs=str(Path(tmp) / 'inputs.pth'))))

    ours, stock = figures['ours'], figures['stock']
    dense = figures.get('dense', ours)
    math_dtype = autocast_dtype(dev.type) if amp else DTYPES[dtype]
    return dict(
        config=str(config),
        device=device_name(dev),
        input_shape=list(inputs.shape),
        amp=amp,
        dtype=dtype,
        compile=compile,
        stock_fp32=stock_fp32,
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
        peak=cpu_peak(math_dtype) if dev.type == 'cpu' else None,
    )


def format_table(result: Dict) -> str:
    """The figures of :func:`compare` as a plain-text table."""
    header = (f"{'model':<6} {'clips/s':>9} {'s/batch':>9} {'GMACs':>9} "
              f"{'GFLOP/s':>9} {'peak MiB':>9} {'total MiB':>10}  "
              'tokens per block')
    lines = [
        f"{result['config']} on {result['device']}, input "
        f"{tuple(result['input_shape'])}, dtype={result['dtype']}, "
        f"amp={result['amp']}, compile={result['compile']}"
        + (' (stock: fp32, eager)' if result.get('stock_fp32') else ''),
        header,
        '-' * len(header)
    ]
    for name, fig in result['models'].items():
        tokens = fig['tokens_per_block']
        tokens = ','.join(map(str, tokens)) if tokens else '-'
        lines.append(f"{name:<6} {fig['clips_per_s']:>9.3f} "
                     f"{fig['seconds_per_batch']:>9.3f} "
                     f"{fig['gflops_per_clip']:>9.2f} "
                     f"{fig['gflops_per_s']:>9.1f} "
                     f"{fig['activation_mib']:>9.1f} "
                     f"{fig['total_mib']:>10.1f}  {tokens}")
    peak = result.get('peak')
    if peak:
        lines.append(peak_line(peak, max(
            fig['gflops_per_s'] for fig in result['models'].values()),
            'model'))
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
