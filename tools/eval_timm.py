"""Top-1 and top-5 of a timm ViT with and without token reduction.

    python tools/eval_timm.py MODEL DATA_DIR --token-reduction NAME|DICT
        [--pretrained | --checkpoint FILE] [--batch-size 64] [--limit N]
        [--workers 2] [--device cpu|cuda] [--crop-pct 0.875]
        [--class-map FILE] [--json result.json]

DATA_DIR is an ImageFolder tree (one folder per class; for ImageNet the 1000
synset folders of the validation set), read with timm's own eval pipeline.
"""
import argparse
import json

import torch

from mmtokred import checkpoint_fit
from mmtokred.benchmark.image import token_reduction_arg
from mmtokred.benchmark.image_accuracy import evaluate_timm, \
    format_evaluation
from mmtokred.timm import PAPER_SETTINGS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='timm model name')
    parser.add_argument('data_dir', help='ImageFolder root (its val/ or '
                        'validation/ folder is used if it has one)')
    parser.add_argument('--token-reduction', required=True,
                        type=token_reduction_arg, metavar='NAME|DICT',
                        help=f'one of {", ".join(PAPER_SETTINGS)}, or a dict '
                        'literal')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true',
                         help="timm's pretrained weights (downloads)")
    weights.add_argument('--checkpoint', help='weights file, loaded safely '
                         '(torch.load weights_only=True, or safetensors)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--limit', type=int,
                        help='evaluate this many images, spread evenly over '
                        'the data set')
    parser.add_argument('--workers', type=int, default=2,
                        help='data loading processes')
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--crop-pct', type=float,
                        help="override the model's eval crop (DeiT's own "
                        'evaluation: 0.875)')
    parser.add_argument('--class-map', default='',
                        help="timm class map file (default: class folders "
                        'in sorted order)')
    parser.add_argument('--json', help='also write the figures to this file')
    return parser.parse_args()


def main():
    args = parse_args()
    result = evaluate_timm(
        args.model, args.data_dir, args.token_reduction,
        checkpoint=args.checkpoint, pretrained=args.pretrained,
        batch_size=args.batch_size, limit=args.limit, workers=args.workers,
        device=args.device, crop_pct=args.crop_pct, class_map=args.class_map)
    print(format_evaluation(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
