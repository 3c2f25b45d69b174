"""Test (and evaluate) a model with MMAction2's runner, through mmtokred.

The command line of MMAction2's tools/test.py, except that the checkpoint may
be left out (the config's ``load_from`` is used), ``--amp`` runs the test
loop under autocast, ``--backend onnxruntime|openvino --model FILE``
evaluates a file written by tools/export.py instead of the torch model (the
config's data, pipeline, view averaging and metric all the same), and the
console shows what runs (model, token
reduction, data), the progress and the metrics: the environment, config and
hook order go to the log file only (WORK_DIR/TIMESTAMP/TIMESTAMP.log), and
to the console as well with ``--verbose``.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

# The plugin applies the upstream fixes and registers mmtokred's modules.
from mmtokred import (arguments, checkpoint_fit, console,  # noqa: F401
                      plugin, upstream_fixes)
from mmtokred.deploy.runtimes import ENGINES, PRECISIONS


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMAction2 test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help="checkpoint file or URL (default: the config's load_from)")
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--dump',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='run the test loop under autocast (fp16 on GPU, bf16 on CPU)')
    parser.add_argument(
        '--backend',
        choices=ENGINES,
        help='evaluate the exported --model in this runtime instead of the '
        "config's torch model (tools/export.py writes it)")
    parser.add_argument(
        '--model',
        help='with --backend: the exported file (.onnx; .xml for openvino)')
    parser.add_argument(
        '--precision',
        choices=PRECISIONS,
        default='fp32',
        help='with --backend: the inference precision (bf16/fp16: openvino '
        'on CPUs that compute in them)')
    parser.add_argument(
        '--show-dir',
        help='directory where the visualization images will be saved.')
    parser.add_argument(
        '--show',
        action='store_true',
        help='whether to display the prediction results in a window.')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='visualize per interval samples.')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='display time of every window. (second)')
    parser.add_argument('--partial-load', nargs='*', metavar='NAME',
                        help=arguments.PARTIAL_LOAD_HELP)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--verbose',
        action='store_true',
        help='print the environment, config and hook order to the console '
        'too, as mmengine does (they are in the log file either way)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if (args.backend is None) != (args.model is None):
        parser.error('--backend and --model go together: --backend '
                     'onnxruntime|openvino --model FILE')
    if args.backend is not None:
        others = [flag for flag, used in (('CHECKPOINT', args.checkpoint),
                                          ('--amp', args.amp)) if used]
        if others:
            parser.error(f'--backend runs the exported file, whose weights '
                         f'and precision are its own: not with {others} '
                         '(use --precision)')
    elif args.precision != 'fp32':
        parser.error('--precision is an option of --backend')
    if args.dump is not None and not args.dump.endswith(('.pkl', '.pickle')):
        parser.error(f'--dump must name a .pkl file, got {args.dump}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    if args.show or (args.show_dir is not None):
        assert 'visualization' in cfg.default_hooks, \
            'VisualizationHook is not set in the `default_hooks` field of ' \
            'config. Please set `visualization=dict(type="VisualizationHook")`'
        cfg.default_hooks.visualization.enable = True
        cfg.default_hooks.visualization.show = args.show
        cfg.default_hooks.visualization.wait_time = args.wait_time
        cfg.default_hooks.visualization.out_dir = args.show_dir
        cfg.default_hooks.visualization.interval = args.interval

    if args.dump is not None:
        dump_metric = dict(type='DumpResults', out_file_path=args.dump)
        if isinstance(cfg.test_evaluator, (list, tuple)):
            cfg.test_evaluator = list(cfg.test_evaluator)
            cfg.test_evaluator.append(dump_metric)
        else:
            cfg.test_evaluator = [cfg.test_evaluator, dump_metric]

    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'))
        cfg.test_cfg['fp16'] = True
    arguments.apply_partial_load(cfg, args)
    return cfg


def main():
    args = parse_args()

    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.backend is not None:
        cfg.model = dict(
            type='ExportedRecognizer', model_file=args.model,
            engine=args.backend, precision=args.precision,
            cls_head=cfg.model.cls_head,
            data_preprocessor=cfg.model.get('data_preprocessor'))
        cfg.load_from = None
    elif args.checkpoint is not None:
        cfg.load_from = args.checkpoint
    elif not cfg.get('load_from'):
        raise ValueError(
            f'no checkpoint: {args.config} sets no load_from; pass one: '
            f'python tools/test.py {args.config} CHECKPOINT')

    upstream_fixes.prepare_cpu_distributed(cfg)
    try:
        console.build_runner(cfg, verbose=args.verbose).test()
    finally:
        upstream_fixes.finish_distributed()


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
