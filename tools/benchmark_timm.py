"""Benchmark timm image ViTs side by side with their token-reduced selves.

    python tools/benchmark_timm.py [MODEL ...] [--token-reduction NAME|DICT]
        [--batch-size N [N ...]] [--repeats 5] [--warmup 1]
        [--dtype fp32|bf16] [--device cpu|cuda] [--pretrained |
        --checkpoint FILE] [--json result.json]

Without MODEL: deit_small_patch16_224 against the DeiT-S paper settings
(ppt-deit-s, nepam-deit-s, jmp-deit-s, patchsim-deit-s) and
vit_base_patch16_384 against nepam-vit-b16-384, random weights.
"""
import argparse
import json

import torch

from mmtokred import checkpoint_fit
from mmtokred.benchmark.image import (DEFAULT_BATCH_SIZES, DEFAULT_MODELS,
                                      MODEL_SETTINGS, compare_timm,
                                      format_table, token_reduction_arg)
from mmtokred.measure.forward import DTYPES
from mmtokred.timm import PAPER_SETTINGS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('models', nargs='*', default=list(DEFAULT_MODELS),
                        metavar='MODEL', help='timm model names (default: '
                        + ' '.join(DEFAULT_MODELS) + ')')
    parser.add_argument('--token-reduction', action='append',
                        type=token_reduction_arg, metavar='NAME|DICT',
                        help='a setting to compare (repeatable): one of '
                        f'{", ".join(PAPER_SETTINGS)}, or a dict literal. '
                        'Default: the paper settings of each model')
    parser.add_argument('--batch-size', type=int, nargs='+',
                        help='images per forward pass: one for all models or '
                        'one per model (default: 32 for DeiT-S, 8 for '
                        'ViT-B/16-384 and others)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed forward passes per model')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed forward passes per model, taking turns')
    parser.add_argument('--dtype', default='fp32', choices=tuple(DTYPES),
                        help='cast the weights and images of every model')
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu, cuda, cuda:1 (default: cuda if available)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true',
                         help="timm's pretrained weights (downloads)")
    weights.add_argument('--checkpoint', help='weights file (one model only)')
    parser.add_argument('--json', help='also write the figures to this file')
    args = parser.parse_args()
    if args.checkpoint and len(args.models) != 1:
        parser.error('--checkpoint needs exactly one MODEL')
    if args.batch_size and len(args.batch_size) not in (1, len(args.models)):
        parser.error('--batch-size takes one value or one per model')
    missing = [m for m in args.models if m not in MODEL_SETTINGS]
    if not args.token_reduction and missing:
        parser.error(f'no default settings for {", ".join(missing)}: give '
                     '--token-reduction')
    return args


def main():
    args = parse_args()
    results = []
    for index, model in enumerate(args.models):
        if args.batch_size:
            batch_size = args.batch_size[min(index, len(args.batch_size) - 1)]
        else:
            batch_size = DEFAULT_BATCH_SIZES.get(model, 8)
        result = compare_timm(
            model, args.token_reduction or MODEL_SETTINGS[model],
            device=args.device, batch_size=batch_size, warmup=args.warmup,
            repeats=args.repeats, dtype=args.dtype,
            pretrained=args.pretrained, checkpoint=args.checkpoint)
        print(format_table(result) + '\n', flush=True)
        results.append(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(results=results), f, indent=2)


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
