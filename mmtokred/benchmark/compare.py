"""Measure configs' models, dense and stock side by side in one run."""
import inspect
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from torch import nn

from ..measure.flops import count_gflops
from ..measure.forward import (DTYPES, autocast_dtype, check_device,
                               device_name, forward_fn, prepare,
                               seconds_per_batch)
from ..measure.kernels import attention_kernel_ms, key_bias_ms
from ..measure.memory import MemoryProbe, allocated_bytes
from ..measure.observe import ReducerTimer, TokenRecorder
from ..measure.peak import limit_lines, machine_limits
from ..measure.side_by_side import (SideBySide, format_ratio, format_spread,
                                    side_by_side)
from ..ops.attention import (CPU_KERNELS, cpu_kernel, cpu_kernel_reason,
                             cpu_kernel_set_to, key_bias_mode,
                             key_bias_mode_reason)
from ..ops.linear import CPU_LINEARS, cpu_linear, cpu_linear_reason, \
    cpu_linear_set_to
from .variants import build_variants, has_token_reduction

#: The models every run has besides the configs' own.
BASELINES = ('stock', 'dense')


def _reduction_overhead(model: nn.Module, forward: Callable,
                        repeats: int) -> Optional[float]:
    """Median fraction of a forward pass spent in the token reducers (in a
    separate, synchronised pass: timing them slows the measured runs)."""
    backbone = model.backbone
    if not backbone.token_reduction.reducers:
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
    reducers = backbone.token_reduction.reducers
    for reducer in reducers:
        reducer.reset_counts()
    forward()
    counts: Dict[str, int] = {}
    for reducer in reducers:
        counts.update(reducer.branch_counts())
    return counts


def config_names(configs: Union[str, Sequence[str]]) -> Dict[str, str]:
    """The config paths by the name their model gets in the table: 'ours'
    for a single config, else each file's stem."""
    paths = [configs] if isinstance(configs, (str, Path)) else list(configs)
    names: Dict[str, str] = {}
    for path in paths:
        name = 'ours' if len(paths) == 1 else Path(path).stem
        if name in names or name in BASELINES:
            raise ValueError(f'configs compared in one run need distinct '
                             f'file names other than {BASELINES}; '
                             f'{name!r} is taken ({path})')
        names[name] = str(path)
    return names


def built_clip_shape(backbone: Dict) -> Dict[str, int]:
    """``num_frames``, ``img_size``, ``patch_size`` and ``tubelet_size`` of
    a VideoMAE backbone config, stock's defaults where it leaves them out."""
    # Imported here: mmaction.models imports only once mmtokred.plugin has
    # applied its fixes, which loading one of our configs does.
    from mmaction.models.backbones.vit_mae import VisionTransformer
    defaults = inspect.signature(VisionTransformer.__init__).parameters
    return {name: backbone.get(name, defaults[name].default)
            for name in ('num_frames', 'img_size', 'patch_size',
                         'tubelet_size')}


def check_clip_shape(backbone: Dict, shape: Sequence[int], config: str,
                     option: str = 'input_shape') -> None:
    """Raise ValueError naming ``option`` unless clips of ``shape``
    ``(T, H, W)`` fit the position embedding the backbone config builds:
    its ``num_frames`` frames exactly (stock MMAction2 fails deep inside its
    forward otherwise), any H and W that are multiples of the patch (the
    embedding is interpolated in space)."""
    built = built_clip_shape(backbone)
    frames, size, patch, tubelet = (built[name] for name in (
        'num_frames', 'img_size', 'patch_size', 'tubelet_size'))
    t, h, w = shape
    problems, ways = [], [f'{option} {frames} {size} {size}']
    if t != frames:
        problems.append(f'its position embedding fits T={frames} frames only')
        ways.append(f'build the model for {t} frames with --cfg-options '
                    f'model.backbone.num_frames={t}' if t > 0 and
                    t % tubelet == 0 else 'build it for T frames with '
                    '--cfg-options model.backbone.num_frames=T (a multiple '
                    f'of tubelet_size={tubelet})')
    if any(v < patch or v % patch for v in (h, w)):
        problems.append(f'H and W must be positive multiples of patch_size='
                        f'{patch} (the embedding is interpolated to them)')
        nearest = f'{option} {frames} ' + ' '.join(
            str(max(patch, round(v / patch) * patch)) for v in (h, w))
        if nearest != ways[0]:
            ways.insert(1, nearest)
    if problems:
        raise ValueError(
            f"{option} {t} {h} {w}: {config}'s model was built for clips of "
            f'{frames} x {size} x {size} (model.backbone.num_frames={frames}'
            f', img_size={size}); {" and ".join(problems)}. Use '
            f'{" or ".join(ways)}')


def _dtype_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16' or 'fp16', as ``--dtype`` names them."""
    return next(name for name, value in DTYPES.items() if value == dtype)


def compare(configs: Union[str, Sequence[str]],
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
    if attention_kernel not in CPU_KERNELS:
        raise ValueError(f'attention_kernel must be one of {CPU_KERNELS}, '
                         f'got {attention_kernel!r}')
    if linear_kernel not in CPU_LINEARS:
        raise ValueError(f'linear_kernel must be one of {CPU_LINEARS}, '
                         f'got {linear_kernel!r}')
    dev = check_device(device)
    paths = config_names(configs)
    cfgs = {}
    for name, path in paths.items():
        cfgs[name] = Config.fromfile(path)
        cfgs[name].merge_from_dict(cfg_options or {})
    first = next(iter(paths))
    if input_shape is not None:
        check_clip_shape(cfgs[first].model.backbone, input_shape, paths[first])
    with cpu_kernel_set_to(attention_kernel), \
            cpu_linear_set_to(linear_kernel):
        result = _compare(cfgs, checkpoint, dev, batch_size, input_shape,
                          warmup, repeats, amp, dtype, compile, stock_fp32,
                          dict(paths=paths, cfg_options=cfg_options,
                               attention_kernel=attention_kernel,
                               linear_kernel=linear_kernel),
                          progress or (lambda line: None))
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


def _compare(cfgs: Dict[str, Config], checkpoint: Optional[str],
             dev: torch.device, batch_size: int,
             input_shape: Optional[Sequence[int]], warmup: int, repeats: int,
             amp: bool, dtype: str, compile: bool, stock_fp32: bool,
             probe: Dict, progress: Callable[[str], None]) -> Dict:
    """:func:`compare` of loaded configs; ``probe`` holds what the memory
    probe's fresh processes need (``paths``, ``cfg_options``,
    ``attention_kernel``, ``linear_kernel``)."""
    backbone = next(iter(cfgs.values())).model.backbone
    if input_shape is None:
        built = built_clip_shape(backbone)
        input_shape = (built['num_frames'], built['img_size'],
                       built['img_size'])
    models = build_variants(cfgs, checkpoint)
    generator = torch.Generator().manual_seed(0)
    clip_shape = (1, backbone.get('in_channels', 3), *input_shape)
    inputs = torch.randn(batch_size, *clip_shape, generator=generator)

    def setting(name: str) -> Tuple[str, bool, bool]:
        """(dtype, amp, compile) of a model."""
        if name == 'stock' and stock_fp32:
            return 'fp32', False, False
        return dtype, amp, compile

    def math_dtype(name: str) -> torch.dtype:
        model_dtype, model_amp, _ = setting(name)
        return autocast_dtype(dev.type) if model_amp else DTYPES[model_dtype]

    device_inputs = inputs.to(dev)
    forwards, resident = {}, {}
    for name, model in models.items():
        held = allocated_bytes(dev)
        prepare(model.to(dev), setting(name)[0])
        forwards[name] = forward_fn(model, device_inputs, setting(name)[1])
        resident[name] = allocated_bytes(dev) - held
    outputs = {name: forward().float().cpu() for name, forward in
               forwards.items()}
    figures: Dict[str, Dict] = {name: {} for name in models}
    for name, model in models.items():
        one_clip = forward_fn(model, device_inputs[:1], setting(name)[1])
        figures[name]['math_dtype'] = _dtype_name(math_dtype(name))
        figures[name]['gflops_per_clip'] = count_gflops(one_clip)
        figures[name]['tokens_per_block'] = None
        if name != 'stock':
            with TokenRecorder(model.backbone) as recorder:
                one_clip()
            figures[name]['tokens_per_block'] = recorder.tokens_per_block
    reduced = [name for name in cfgs if has_token_reduction(cfgs[name])]
    for name in reduced:
        figures[name]['reduction_overhead'] = _reduction_overhead(
            models[name], forwards[name], repeats)
        figures[name]['branch_counts'] = _branch_counts(models[name],
                                                        forwards[name])
    compiled = [name for name in models if setting(name)[2]]
    for name in compiled:
        prepare(models[name], dtype, compile=True)
    if compiled:
        # The first warm-up pass compiles: run it here, so its time can be
        # told, before the timed turns.
        count = f"{len(compiled)} model{'s' * (len(compiled) > 1)}"
        progress(f'compiling {count} with torch.compile (the first pass '
                 'takes up to a minute per model, less from the compile '
                 'cache of an earlier run)...')
        compiling = sum(seconds_per_batch(forwards, 0, 1).values())
        progress(f'compiled in {compiling:.0f} s')
    run = side_by_side(
        forwards, max(warmup - bool(compiled), 0), repeats, dev,
        MemoryProbe('mmtokred.benchmark.variants:probe_forward',
                    _probe_specs(probe, inputs, models, setting), resident))
    for name, fig in figures.items():
        fig.update(run.figures(name))
        median = fig['seconds_per_batch']
        fig.update(
            clips_per_s=batch_size / median,
            # GFLOPs per clip count multiply-accumulates (the model zoo's
            # convention); a machine's peak counts 2 FLOPs per multiply-add.
            gflops_per_s=2 * fig['gflops_per_clip'] * batch_size / median)

    names = list(cfgs)
    reference = 'dense' if 'dense' in models else names[0]
    dense_tokens = figures[reference]['tokens_per_block'][0]
    stock_backbone = models['stock'].backbone
    embed_dims = stock_backbone.embed_dims
    heads = stock_backbone.blocks[0].attn.num_heads
    limits = machine_limits(
        {fig['math_dtype']: DTYPES[fig['math_dtype']]
         for fig in figures.values()}, dev, batch_size * dense_tokens,
        embed_dims)
    for name, fig in figures.items():
        fig['share_of_achievable'] = fig['gflops_per_s'] / limits[
            fig['math_dtype']]['achievable']['gflops']
    _ratios(figures, run)
    return dict(
        device=device_name(dev),
        input_shape=list(inputs.shape),
        amp=amp,
        dtype=dtype,
        compile=compile,
        stock_fp32=stock_fp32,
        warmup=warmup,
        repeats=repeats,
        models=figures,
        limits=limits,
        attention=_attention(dev, math_dtype(names[0]),
                             probe['attention_kernel'],
                             (batch_size, heads, dense_tokens,
                              embed_dims // heads)),
        linear=_linear(dev, probe['linear_kernel']),
        key_bias=_key_bias(dev, math_dtype(names[0]), models,
                           (batch_size, heads, dense_tokens,
                            embed_dims // heads)),
        max_abs_diff_dense_vs_stock=float(
            (outputs[reference] - outputs['stock']).abs().max()),
    )


def _probe_specs(probe: Dict, inputs: torch.Tensor,
                 models: Dict[str, nn.Module],
                 setting: Callable) -> Callable[[Path], Dict[str, Dict]]:
    """The specs of :func:`.variants.probe_forward` that rebuild each model
    in a fresh process, its weights and the clips saved in a folder."""
    paths = probe['paths']
    first = next(iter(paths))

    def specs(folder: Path) -> Dict[str, Dict]:
        torch.save(inputs, folder / 'inputs.pth')
        torch.save(models[first].state_dict(), folder / 'weights.pth')
        specs = {}
        for name in models:
            variant_dtype, variant_amp, variant_compile = setting(name)
            specs[name] = dict(
                config=paths.get(name, paths[first]),
                cfg_options=probe['cfg_options'],
                variant=name if name in BASELINES else 'ours',
                amp=variant_amp, dtype=variant_dtype,
                compile=variant_compile,
                attention_kernel=probe['attention_kernel'],
                linear_kernel=probe['linear_kernel'],
                weights=str(folder / 'weights.pth'),
                inputs=str(folder / 'inputs.pth'))
        return specs

    return specs


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


def _ratios(figures: Dict[str, Dict], run: SideBySide) -> None:
    """Each model's figures against stock and, where it reduces, dense
    (``run``: its timed turns and peaks)."""
    stock = figures['stock']
    dense = figures.get('dense')
    for name, fig in figures.items():
        fig.update(
            speedup_vs_stock=run.speedup(name, 'stock'),
            flops_ratio_vs_stock=fig['gflops_per_clip'] /
            stock['gflops_per_clip'],
            peak_mem_ratio_vs_stock=run.memory_ratio(name, 'stock'),
            total_mem_ratio_vs_stock=run.memory_ratio(name, 'stock',
                                                      'total_mib'))
        if dense is not None and name not in BASELINES:
            flops_ratio = fig['gflops_per_clip'] / dense['gflops_per_clip']
            speedup = run.speedup(name, 'dense')
            fig.update(speedup_vs_dense=speedup,
                       flops_ratio_vs_dense=flops_ratio,
                       bound_share=speedup * flops_ratio)


def format_tokens(tokens: Optional[List[int]]) -> str:
    """Tokens per block as a table cell: one count, or first->last."""
    if not tokens:
        return '-'
    if len(set(tokens)) == 1:
        return str(tokens[0])
    return f'{tokens[0]}->{tokens[-1]}'


def format_table(result: Dict) -> str:
    """The figures of :func:`compare` as a plain-text table."""
    width = max(6, *(len(name) for name in result['models']))
    header = (f"{'model':<{width}} {'dtype':>8} {'clips/s':>8} "
              f"{'spread':>7} {'GMACs':>7} {'vs stock':>8} {'vs dense':>8} "
              f"{'of bound':>8} {'GFLOP/s':>8} {'of achv':>7} "
              f"{'peak MiB':>9} {'memory':>7} {'total MiB':>9} "
              f"{'reducers':>8}  tokens")
    lines = [
        f"{', '.join(result['configs'])} on {result['device']}, input "
        f"{tuple(result['input_shape'])}, dtype={result['dtype']}, "
        f"amp={result['amp']}, compile={result['compile']}"
        + (' (stock: fp32, eager)' if result.get('stock_fp32') else ''),
        header,
        '-' * len(header)
    ]

    def optional(fig: Dict, key: str, spec: str, scale: float = 1.,
                 suffix: str = '') -> str:
        value = fig.get(key)
        return '-' if value is None else f'{scale * value:{spec}}{suffix}'

    for name, fig in result['models'].items():
        lines.append(
            f"{name:<{width}} {fig['math_dtype']:>8} "
            f"{fig['clips_per_s']:>8.3f} "
            f"{format_spread(fig['spread'], result['repeats']):>7} "
            f"{fig['gflops_per_clip']:>7.2f} "
            f"{fig['speedup_vs_stock']:>7.2f}x "
            f"{optional(fig, 'speedup_vs_dense', '.2f', suffix='x'):>8} "
            f"{optional(fig, 'bound_share', '.2f'):>8} "
            f"{fig['gflops_per_s']:>8.1f} "
            f"{100 * fig['share_of_achievable']:>6.0f}% "
            f"{fig['activation_mib']:>9.1f} "
            f"{format_ratio(fig['peak_mem_ratio_vs_stock']):>7} "
            f"{fig['total_mib']:>9.1f} "
            f"{optional(fig, 'reduction_overhead', '.1f', 100, '%'):>8}  "
            f"{format_tokens(fig['tokens_per_block'])}")
    lines.append(
        'GMACs: multiply-accumulates per clip; vs stock, vs dense: speedup; '
        'of bound: speedup vs dense over the FLOPs bound (dense GMACs / '
        'GMACs); of achv: share of the achievable rate below; peak MiB: the '
        "forward pass's own peak, memory: its ratio to stock's; reducers: "
        'share of the forward pass in the token reducers; spread: (max - '
        "min) / median of the repeats' times"
        + (' (?: one repeat, unknown)' if result['repeats'] < 2 else ''))
    attention = result['attention']
    line = f"attention kernel: {attention['reason']}"
    if attention.get('ms'):
        line += ('; one call at (B, H, N, D) = '
                 f"{tuple(attention['shape'])}: " + ', '.join(
                     f'{kernel} {ms:.1f} ms'
                     for kernel, ms in attention['ms'].items()))
    lines.append(line)
    if result.get('key_bias'):
        bias = result['key_bias']
        lines.append(
            f"key bias: {bias['reason']}; one call at (B, H, N, D) = "
            f"{tuple(bias['shape'])}: " + ', '.join(
                f'{mode} {ms:.1f} ms' for mode, ms in bias['ms'].items()))
    if result.get('linear'):  # absent from results saved before it
        lines.append(f"fp32 matrix products: {result['linear']['reason']}")
    best = {}
    for fig in result['models'].values():
        best[fig['math_dtype']] = max(best.get(fig['math_dtype'], 0.),
                                      fig['gflops_per_s'])
    lines.append(limit_lines(result['limits'], best, 'model'))
    for name, fig in result['models'].items():
        if name == 'stock':
            continue
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
        lines.append(line)
    lines.append('max |dense - stock| = '
                 f"{result['max_abs_diff_dense_vs_stock']:.2e}")
    return '\n'.join(lines)
