"""Measure configs' models, dense and stock side by side in one run: the
video family (:mod:`.video`) through the benchmark driver
(:func:`.driver.measure`), and the table ``tools/benchmark.py`` prints."""
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from mmengine.config import Config
from torch import nn

from ..measure.forward import (DTYPES, autocast_dtype, check_device,
                               device_name)
from ..measure.kernels import attention_kernel_ms, key_bias_ms
from ..measure.peak import limit_lines
from ..measure.side_by_side import format_ratio, format_spread
from ..ops.attention import (CPU_KERNELS, cpu_kernel, cpu_kernel_reason,
                             cpu_kernel_set_to, key_bias_mode,
                             key_bias_mode_reason)
from ..ops.linear import CPU_LINEARS, cpu_linear, cpu_linear_reason, \
    cpu_linear_set_to
from ..table import Column, format_table as table, key
from .cells import format_tokens, speedup
from .driver import (Setting, check_counts, check_precision, measure,
                     random_inputs)
from .variants import build_variants, has_token_reduction
from .video import (VideoFamily, check_clip_shape, config_names,
                    default_clip_shape)


def _check(*, amp: bool, dtype: str, compile: bool, warmup: int,
           attention_kernel: str, linear_kernel: str) -> None:
    """Raise ValueError naming the setting that cannot run."""
    check_precision(dtype, amp)
    if compile and warmup < 1:
        raise ValueError('compile needs warmup >= 1 (the first pass '
                         'compiles)')
    if attention_kernel not in CPU_KERNELS:
        raise ValueError(f'attention_kernel must be one of {CPU_KERNELS}, '
                         f'got {attention_kernel!r}')
    if linear_kernel not in CPU_LINEARS:
        raise ValueError(f'linear_kernel must be one of {CPU_LINEARS}, '
                         f'got {linear_kernel!r}')


def compare(configs: Union[str, Sequence[str]], *,
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
            stock_fp32: bool = False,
            attention_kernel: str = 'auto',
            linear_kernel: str = 'auto',
            progress: Optional[Callable[[str], None]] = None) -> Dict:
    """Benchmark the models of ``configs`` against stock MMAction2 and
    against the same backbone with reduction off (dense), on synthetic
    clips, all taking turns in every repetition.

    Args:
        configs: one config path, or several that build the same model but
            for ``model.backbone.token_reduction``.
        input_shape: ``(T, H, W)`` of a clip; defaults to the backbone's
            ``num_frames`` and ``img_size``.
        amp: run under autocast (fp16 on GPU, bf16 on CPU).
        dtype: cast every model's weights and the clips (``DTYPES``).
        compile: ``torch.compile`` every model's backbone (after FLOPs and
            tokens are counted; the warm-up passes compile).
        stock_fp32: run stock as MMAction2 ships it (fp32, eager) whatever
            the others run in, so ``speedup_vs_stock`` is the whole gain.
        attention_kernel: the CPU half-precision attention kernel
            (:data:`mmtokred.ops.attention.CPU_KERNELS`).
        linear_kernel: the fp32 CPU matrix-product path
            (:data:`mmtokred.ops.linear.CPU_LINEARS`).
        progress: called with a line on what takes long (compiling), e.g.
            ``print``; None says nothing.

    Returns:
        A dict with the run's settings; per model under ``models`` (stock,
        dense, then one per config: 'ours' for a single config, else the
        file's stem) its figures and ratios (``speedup_vs_stock``,
        ``speedup_vs_dense``, ``bound_share``: the speedup over dense
        divided by dense's FLOPs over the model's, ``reduction_overhead``:
        the share of the forward pass spent in the reducers, ...);
        ``attention`` (the CPU kernel that ran, why, and both kernels' time
        at the dense shape); ``linear`` (the fp32 matrix-product path, why
        and the setting); ``limits`` (achievable and nominal rates per
        dtype). With a single config the ratios of 'ours' are also at the
        top level.
    """
    check_counts(batch_size, warmup, repeats)
    _check(amp=amp, dtype=dtype, compile=compile, warmup=warmup,
           attention_kernel=attention_kernel, linear_kernel=linear_kernel)
    dev = check_device(device)
    paths = config_names(configs)
    cfgs = {}
    for name, path in paths.items():
        cfgs[name] = Config.fromfile(path)
        cfgs[name].merge_from_dict(cfg_options or {})
    first = next(iter(paths))
    backbone = cfgs[first].model.backbone
    if input_shape is None:
        input_shape = default_clip_shape(backbone)
    else:
        check_clip_shape(backbone, input_shape, paths[first])
    family = VideoFamily(
        run_as=Setting(dtype, amp, compile), stock_fp32=stock_fp32,
        reduced=[name for name, cfg in cfgs.items()
                 if has_token_reduction(cfg)],
        probe=dict(paths=paths, cfg_options=cfg_options,
                   attention_kernel=attention_kernel,
                   linear_kernel=linear_kernel))
    inputs = random_inputs(batch_size, [1, backbone.get('in_channels', 3),
                                        *input_shape])
    with cpu_kernel_set_to(attention_kernel), \
            cpu_linear_set_to(linear_kernel):
        models = build_variants(cfgs, checkpoint)
        found = measure(family, models, inputs, device=dev, warmup=warmup,
                        repeats=repeats,
                        progress=progress or (lambda line: None))
        reference = 'dense' if 'dense' in models else first
        stock = models['stock'].backbone
        heads = stock.blocks[0].attn.num_heads
        shape = (batch_size, heads,
                 found.figures[reference]['tokens_per_block'][0],
                 stock.embed_dims // heads)
        setting = family.setting(first)
        math = autocast_dtype(dev.type) if setting.amp else \
            DTYPES[setting.dtype]
        result = dict(
            device=device_name(dev), input_shape=list(inputs.shape),
            amp=amp, dtype=dtype, compile=compile, stock_fp32=stock_fp32,
            warmup=warmup, repeats=repeats, models=found.figures,
            limits=found.limits,
            attention=_attention(dev, math, attention_kernel, shape),
            linear=_linear(dev, linear_kernel),
            key_bias=_key_bias(dev, math, models, shape),
            max_abs_diff_dense_vs_stock=float(
                (found.outputs[reference] - found.outputs['stock'])
                .abs().max()))
    result['configs'] = list(paths.values())
    if len(cfgs) == 1:  # the figures of 'ours' at the top, as one config has
        ours = result['models']['ours']
        result.update(
            config=result['configs'][0],
            speedup_vs_stock=ours['speedup_vs_stock'],
            speedup_vs_dense=ours.get('speedup_vs_dense', 1.),
            flops_ratio_vs_stock=ours['flops_ratio_vs_stock'],
            peak_mem_ratio_vs_stock=ours['peak_mem_ratio_vs_stock'],
            total_mem_ratio_vs_stock=ours['total_mem_ratio_vs_stock'],
            reduction_overhead=ours.get('reduction_overhead'))
    return result


def _attention(dev: torch.device, dtype: torch.dtype, setting: str,
               shape: Sequence[int]) -> Dict:
    """Which attention kernel the configs' models ran and, for CPU half
    precision, what each kernel takes at the dense shape."""
    if dev.type != 'cpu':
        return dict(kernel='fused', reason=f'{dev.type}: torch chooses '
                    'among its fused kernels', setting=setting)
    figures = dict(kernel=cpu_kernel(dtype), reason=cpu_kernel_reason(dtype),
                   setting=setting)
    if dtype in (torch.bfloat16, torch.float16):
        figures.update(shape=list(shape),
                       ms=attention_kernel_ms(shape, dtype))
    return figures


def _key_bias(dev: torch.device, dtype: torch.dtype,
              models: Dict[str, nn.Module],
              shape: Sequence[int]) -> Optional[Dict]:
    """Where a model's attention adds a key bias: the way it is added, why,
    and both ways' time at the dense shape; else None."""
    reductions = [getattr(getattr(model, 'backbone', None), 'token_reduction',
                          None) for model in models.values()]
    if not any(getattr(reduction, 'adds_key_bias', False)
               for reduction in reductions):
        return None
    return dict(mode=key_bias_mode(dev, dtype),
                reason=key_bias_mode_reason(dev, dtype), shape=list(shape),
                ms=key_bias_ms(shape, dev, dtype))


def _linear(dev: torch.device, setting: str) -> Dict:
    """The path the models' fp32 matrix products took, and why."""
    if dev.type != 'cpu':
        return dict(path='aten', reason=f'aten ({dev.type}: the oneDNN path '
                    'is for CPUs)', setting=setting)
    return dict(path=cpu_linear(), reason=cpu_linear_reason(),
                setting=setting)


#: The columns of :func:`format_table`, one row per model.
COLUMNS = (
    Column('model', lambda row: row['name'], 'left'),
    Column('dtype', key('math_dtype')),
    Column('clips/s', key('clips_per_s', '.3f')),
    Column('spread', lambda row: format_spread(row['spread'],
                                               row['repeats'])),
    Column('GMACs', key('gflops_per_clip', '.2f')),
    Column('vs stock', speedup('speedup_vs_stock')),
    Column('vs dense', speedup('speedup_vs_dense')),
    Column('of bound', key('bound_share', '.2f')),
    Column('GFLOP/s', key('gflops_per_s', '.1f')),
    Column('of achv', key('share_of_achievable', '.0%')),
    Column('peak MiB', key('activation_mib', '.1f')),
    Column('memory', lambda row: format_ratio(
        row['peak_mem_ratio_vs_stock'])),
    Column('total MiB', key('total_mib', '.1f')),
    Column('reducers', key('reduction_overhead', '.1%')),
    Column('tokens', lambda row: format_tokens(row['tokens_per_block']),
           'left'),
)


def format_table(result: Dict) -> str:
    """The figures of :func:`compare` as a plain-text table, then what ran
    and each model's ratios in words."""
    title = (f"{', '.join(result['configs'])} on {result['device']}, input "
             f"{tuple(result['input_shape'])}, dtype={result['dtype']}, "
             f"amp={result['amp']}, compile={result['compile']}"
             + (' (stock: fp32, eager)' if result.get('stock_fp32') else ''))
    rows = [dict(fig, name=name, repeats=result['repeats'])
            for name, fig in result['models'].items()]
    notes = [
        'GMACs: multiply-accumulates per clip; vs stock, vs dense: speedup; '
        'of bound: speedup vs dense over the FLOPs bound (dense GMACs / '
        'GMACs); of achv: share of the achievable rate below; peak MiB: the '
        "forward pass's own peak, memory: its ratio to stock's; reducers: "
        'share of the forward pass in the token reducers; spread: (max - '
        "min) / median of the repeats' times"
        + (' (?: one repeat, unknown)' if result['repeats'] < 2 else '')]
    notes += _setting_lines(result)
    best: Dict[str, float] = {}
    for fig in result['models'].values():
        best[fig['math_dtype']] = max(best.get(fig['math_dtype'], 0.),
                                      fig['gflops_per_s'])
    notes.append(limit_lines(result['limits'], best, 'model'))
    notes += [_ratio_line(name, fig)
              for name, fig in result['models'].items() if name != 'stock']
    notes.append('max |dense - stock| = '
                 f"{result['max_abs_diff_dense_vs_stock']:.2e}")
    return table(COLUMNS, rows, title=title, notes=notes)


def _setting_lines(result: Dict) -> List[str]:
    """The attention kernel, key bias and matrix-product path that ran."""
    attention = result['attention']
    line = f"attention kernel: {attention['reason']}"
    if attention.get('ms'):
        line += ('; one call at (B, H, N, D) = '
                 f"{tuple(attention['shape'])}: " + ', '.join(
                     f'{kernel} {ms:.1f} ms'
                     for kernel, ms in attention['ms'].items()))
    lines = [line]
    if result.get('key_bias'):
        bias = result['key_bias']
        lines.append(
            f"key bias: {bias['reason']}; one call at (B, H, N, D) = "
            f"{tuple(bias['shape'])}: " + ', '.join(
                f'{mode} {ms:.1f} ms' for mode, ms in bias['ms'].items()))
    if result.get('linear'):  # absent from results saved before it
        lines.append(f"fp32 matrix products: {result['linear']['reason']}")
    return lines


def _ratio_line(name: str, fig: Dict) -> str:
    """One model against stock and dense, in words."""
    line = (f"{name} vs stock: speedup {fig['speedup_vs_stock']:.2f}x, "
            f"FLOPs {fig['flops_ratio_vs_stock']:.3f}, peak memory "
            f"{format_ratio(fig['peak_mem_ratio_vs_stock'])} (total "
            f"{format_ratio(fig['total_mem_ratio_vs_stock'])})")
    if 'speedup_vs_dense' in fig:
        line += (f"; vs dense: speedup {fig['speedup_vs_dense']:.2f}x "
                 f"at {fig['flops_ratio_vs_dense']:.3f} of its FLOPs, "
                 f"{fig['bound_share']:.2f} of the "
                 f"{1 / fig['flops_ratio_vs_dense']:.2f}x bound")
    if fig.get('branch_counts'):
        line += '; branches in one forward pass: ' + ', '.join(
            f'{branch} {count}'
            for branch, count in fig['branch_counts'].items())
    return line
