"""Train a model with MMAction2's runner, through mmtokred.

The command line of MMAction2's tools/train.py. ``--launcher pytorch`` also
runs on machines without CUDA (gloo). The console shows what runs (model,
token reduction, data), the progress and the metrics: the environment, config
and hook order go to the log file only (WORK_DIR/TIMESTAMP/TIMESTAMP.log), and
to the console as well with ``--verbose``.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

# The plugin applies the upstream fixes and registers mmtokred's modules.
from mmtokred import (arguments, checkpoint_fit, console,  # noqa: F401
                      plugin, upstream_fixes)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a action recognizer')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument(
        '--diff-rank-seed',
        action='store_true',
        help='whether or not set different seeds for different ranks')
    parser.add_argument(
        '--deterministic',
        action='store_true',
        help='whether to set deterministic options for CUDNN backend.')
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
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError('--amp supports the optim_wrapper types '
                             'OptimWrapper and AmpOptimWrapper, not '
                             f'{optim_wrapper}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    arguments.apply_partial_load(cfg, args)

    if cfg.get('randomness', None) is None:
        cfg.randomness = dict(
            seed=args.seed,
            diff_rank_seed=args.diff_rank_seed,
            deterministic=args.deterministic)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


#: What a config needs to train.
TRAINING = ('train_dataloader', 'train_cfg', 'optim_wrapper')


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    missing = [key for key in TRAINING if not cfg.get(key)]
    if missing:
        raise SystemExit(
            f'{args.config} does not train: it has no {", ".join(missing)} '
            '(a test config); configs that train: configs/proxy/'
            'videomae_proxy_dense.py, configs/proxy/*_finetune.py, '
            'configs/finetune/*.py')
    upstream_fixes.prepare_cpu_distributed(cfg)
    try:
        console.build_runner(cfg, verbose=args.verbose).train()
    finally:
        upstream_fixes.finish_distributed()


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
