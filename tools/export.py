"""Export a config's recognizer to ONNX or OpenVINO, token reduction and all.

    python tools/export.py CONFIG [CHECKPOINT] --format onnx|openvino
        --out FILE [--shape T H W] [--check onnxruntime openvino]

Writes the backbone and head: preprocessed clips (N, C, T, H, W), as
MMAction2's data preprocessor gives them, to class scores (N, num_classes),
the batch N free. Without CHECKPOINT the config's ``load_from`` is loaded
(downloaded as tools/test.py does); a checkpoint that does not fit the
config's model is refused. Every fixed budget exports (dense, NEPAM by ratio
or count, ToMe, PPT, JMP, pruning, and their combinations); thresholds,
whose token counts depend on each clip, are refused with what to use
instead. ``--check`` runs the written file in the named runtimes on random
clips beside the torch model and prints the largest difference.
"""
import argparse
import time

import torch
from mmengine.config import Config, DictAction

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred import checkpoint_fit
from mmtokred.console import describe_reduction
from mmtokred.deploy.from_config import (FORMATS, build_recognizer,
                                         clip_shape, export_recognizer)
from mmtokred.deploy.parity import compare_outputs, format_parity
from mmtokred.deploy.runtimes import ENGINES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?',
                        help="weights (default: the config's load_from)")
    parser.add_argument('--format', required=True, choices=tuple(FORMATS))
    parser.add_argument('--out', required=True,
                        help='the file: .onnx, or .xml for openvino (its '
                        '.bin and the .onnx it came from beside it)')
    parser.add_argument('--shape', type=int, nargs=3,
                        metavar=('T', 'H', 'W'),
                        help="clip shape (default: the config's num_frames "
                        'and img_size)')
    parser.add_argument('--check', nargs='*', choices=ENGINES,
                        help='run the file in these runtimes (default with '
                        'no names: the one that reads it best) beside torch '
                        'on random clips and print the differences')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options or {})
    checkpoint = args.checkpoint or cfg.get('load_from')
    if not checkpoint:
        raise SystemExit(f'no checkpoint: {args.config} sets no load_from; '
                         f'pass one: python tools/export.py {args.config} '
                         'CHECKPOINT ...')
    try:
        shape = clip_shape(cfg, args.shape)
    except ValueError as error:
        raise SystemExit(str(error))
    model = build_recognizer(cfg, checkpoint)
    start = time.perf_counter()
    try:
        reduction = cfg.model.backbone.get('token_reduction')
        written = export_recognizer(
            model, args.format, args.out, shape, args.config,
            metadata=dict(config=args.config, checkpoint=checkpoint,
                          token_reduction=describe_reduction(reduction)))
    except ValueError as error:
        raise SystemExit(str(error))
    print(f"wrote {written['path']}: {args.config} with {checkpoint}, "
          f'clips (N, {", ".join(map(str, shape))}) to scores, token '
          f'reduction: {describe_reduction(reduction)}; in '
          f'{time.perf_counter() - start:.0f} s')
    if args.check is not None:
        engines = args.check or (['onnxruntime'] if args.format == 'onnx'
                                 else ['openvino'])
        clips = torch.randn(2, *shape,
                            generator=torch.Generator().manual_seed(1))
        print(format_parity(compare_outputs(model, written['path'], engines,
                                            clips)))


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
