"""Benchmark configs' models side by side with stock MMAction2.

    python tools/benchmark.py configs/videomae_nepam.py [more configs of the
        same model] [--device cuda] [--batch-size 1] [--shape 16 224 224]
        [--repeats 3] [--amp | --dtype fp32|bf16|fp16] [--compile]
        [--stock-fp32] [--attention auto|fused|blocked]
        [--linear auto|aten|onednn] [--json result.json]
    python tools/benchmark.py configs/videomae_nepam.py [more configs]
        --engines torch onnxruntime openvino [--dtype fp32 bf16]
    python tools/benchmark.py configs/videomae_nepam.py --batching
        [--mean-tokens 0.5 | --threshold T] [--batch-size 16] [--device cuda]
        [--amp | --dtype fp32|bf16|fp16]

With --engines, every model (stock, dense, each config) runs in each named
engine (torch eager; ONNX Runtime and OpenVINO on the model exported to
ONNX) and each --dtype given, one table with the ratio to the fastest dense
engine of each dtype (CPU only; the deploy extra).

With --batching, the config's NEPAM runs in threshold mode (each clip keeps
the tokens its content needs; the threshold set for a mean share of the
tokens on clips of graded redundancy) and a batch of such clips is timed
packed, padded and clip by clip beside dense, side by side, with one call
of each packed attention kernel at the batch's lengths.
"""
import argparse
import functools
import json

from mmengine.config import Config, DictAction

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred import checkpoint_fit
from mmtokred.arguments import finite, integer, share
from mmtokred.benchmark.compare import compare, format_table
from mmtokred.benchmark.engines import ENGINES, compare_engines, format_engines
from mmtokred.benchmark.threshold import compare_batching, format_batching
from mmtokred.benchmark.video import check_clip_shape
from mmtokred.measure.forward import DTYPES, check_device
from mmtokred.ops.attention import CPU_KERNELS
from mmtokred.ops.linear import CPU_LINEARS
from mmtokred.reducers import build_reducer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='+',
                        help='config file(s); several must build the same '
                        'model but for model.backbone.token_reduction, and '
                        'run side by side')
    parser.add_argument('--checkpoint', help='weights for all models '
                        '(default: random, the same for all)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda, cuda:1')
    parser.add_argument('--batch-size', type=integer(1),
                        help='clips per forward pass, >= 1 (default 1; with '
                        '--batching 16, and at least 2)')
    parser.add_argument('--shape', type=int, nargs=3, metavar=('T', 'H', 'W'),
                        help="clip shape: T the config's num_frames, H and "
                        'W multiples of the patch (default: num_frames, '
                        'img_size)')
    parser.add_argument('--warmup', type=integer(0), default=1,
                        help='untimed forward passes per model, >= 0 (>= 1 '
                        'with --compile)')
    parser.add_argument('--repeats', type=integer(1), default=3,
                        help='timed forward passes per model, >= 1 (>= 2 '
                        'for a spread)')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (fp16 on GPU, bf16 on CPU)')
    parser.add_argument('--dtype', default=['fp32'], nargs='+',
                        choices=tuple(DTYPES),
                        help='cast the weights and clips of every model '
                        '(several with --engines: each in each engine)')
    parser.add_argument('--engines', nargs='+', choices=ENGINES,
                        help='run every model in each of these engines, side '
                        'by side (CPU; the models exported to ONNX for '
                        'onnxruntime and openvino)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the backbone of every model')
    parser.add_argument('--stock-fp32', action='store_true',
                        help='run stock as MMAction2 ships it (fp32, eager) '
                        'while the others use --amp/--dtype/--compile')
    parser.add_argument('--attention', default='auto', choices=CPU_KERNELS,
                        help='CPU half-precision attention kernel (auto: '
                        "torch's fused kernel where the CPU has AMX, else "
                        'blocked matrix products)')
    parser.add_argument('--linear', default='auto', choices=CPU_LINEARS,
                        help='fp32 CPU matrix-product path (auto: oneDNN '
                        'where torch uses MKL on a non-Intel CPU with '
                        'AVX-512, else F.linear)')
    parser.add_argument('--batching', action='store_true',
                        help="NEPAM's threshold mode packed, padded and clip "
                        'by clip beside dense (one config with a NEPAM '
                        'input stage)')
    parser.add_argument('--mean-tokens', type=share,
                        help='--batching: the mean share of the tokens the '
                        'clips keep, in (0, 1], which sets the threshold '
                        '(default 0.5)')
    parser.add_argument('--threshold', type=finite,
                        help="--batching: NEPAM's threshold as given (as "
                        "NEPAM takes it: >= 0 for the l1 and l2 distances, "
                        '>= -1 for cosine)')
    parser.add_argument('--json', help='also write the figures to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args()
    if args.engines:
        others = [flag for flag, used in (
            ('--checkpoint', args.checkpoint), ('--amp', args.amp),
            ('--compile', args.compile), ('--stock-fp32', args.stock_fp32),
            ('--batching', args.batching),
            ('--device', args.device != 'cpu')) if used]
        if others:
            parser.error(f'--engines times every model in each engine on '
                         f'the CPU with random weights: not with {others}')
        if len(set(args.engines)) != len(args.engines) or \
                len(set(args.dtype)) != len(args.dtype):
            parser.error('--engines and --dtype name each value once')
        return args
    if len(args.dtype) > 1:
        parser.error('several --dtype values go with --engines; without '
                     'it, give one')
    args.dtype = args.dtype[0]
    # Refused as usage errors naming the command-line option; compare()
    # makes the same checks for callers of the library, naming its
    # arguments.
    if args.batching:
        if len(args.config) != 1:
            parser.error('--batching takes one config')
        others = [flag for flag, used in (
            ('--checkpoint', args.checkpoint), ('--shape', args.shape),
            ('--compile', args.compile), ('--stock-fp32', args.stock_fp32))
            if used]
        if others:
            parser.error(f'--batching times eager models with random '
                         f'weights on its own clips: not with {others}')
        if args.amp and args.dtype != 'fp32':
            parser.error('--amp runs fp32 weights under autocast: not with '
                         f'--dtype {args.dtype}')
        if args.mean_tokens is not None and args.threshold is not None:
            parser.error('give --mean-tokens or --threshold, not both')
        if args.mean_tokens is None and args.threshold is None:
            args.mean_tokens = 0.5
        if args.batch_size == 1:
            parser.error('--batch-size 1: --batching times a batch of clips '
                         'that keep different numbers of tokens: give 2 or '
                         'more (default 16)')
    elif args.mean_tokens is not None or args.threshold is not None:
        parser.error('--mean-tokens and --threshold are options of '
                     '--batching')
    if args.compile and args.warmup < 1:
        parser.error('--warmup 0: --compile needs --warmup 1 or more (the '
                     'first pass compiles)')
    try:
        check_device(args.device, '--device')
        if args.threshold is not None:
            check_threshold(args)
        if args.shape is not None:
            cfg = Config.fromfile(args.config[0])
            cfg.merge_from_dict(args.cfg_options or {})
            check_clip_shape(cfg.model.backbone, args.shape, args.config[0],
                             '--shape')
    except ValueError as exc:
        parser.error(str(exc))
    return args


def check_threshold(args: argparse.Namespace) -> None:
    """Raise ValueError naming ``--threshold`` unless the config's NEPAM
    takes it (the bound depends on its distance)."""
    cfg = Config.fromfile(args.config[0])
    cfg.merge_from_dict(args.cfg_options or {})
    reduction = cfg.model.backbone.get('token_reduction') or {}
    nepam = dict(reduction.get('input') or {})
    if nepam.get('type') != 'NEPAM':
        raise ValueError(f'{args.config[0]} has no NEPAM input stage to '
                         'threshold')
    nepam.update(ratio=None, num_windows=None, threshold=args.threshold)
    try:
        build_reducer(nepam)
    except ValueError as exc:
        raise ValueError(f'--threshold {args.threshold:g}: {exc}') from None


def main() -> None:
    args = parse_args()
    if args.engines:
        result = compare_engines(
            args.config, engines=args.engines, dtypes=args.dtype,
            cfg_options=args.cfg_options, batch_size=args.batch_size or 1,
            input_shape=args.shape, warmup=args.warmup,
            repeats=args.repeats,
            progress=functools.partial(print, flush=True))
        print(format_engines(result))
    elif args.batching:
        result = compare_batching(
            args.config[0], mean_tokens=args.mean_tokens,
            threshold=args.threshold, batch_size=args.batch_size or 16,
            repeats=args.repeats, cfg_options=args.cfg_options,
            device=args.device, dtype=args.dtype, amp=args.amp)
        print(format_batching(result))
    else:
        result = compare(
            args.config[0] if len(args.config) == 1 else args.config,
            checkpoint=args.checkpoint, cfg_options=args.cfg_options,
            device=args.device, batch_size=args.batch_size or 1,
            input_shape=args.shape, warmup=args.warmup,
            repeats=args.repeats, amp=args.amp, dtype=args.dtype,
            compile=args.compile, stock_fp32=args.stock_fp32,
            attention_kernel=args.attention,
            linear_kernel=args.linear,
            progress=functools.partial(print, flush=True))
        print(format_table(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
