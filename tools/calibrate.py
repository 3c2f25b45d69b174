"""Calibrate a token-reduction schedule for a FLOPs target, without training.

    python tools/calibrate.py CONFIG CHECKPOINT --flops 0.5
        [--method nepam+tome] [--clips 256] [--split train]
        --out configs/my_calibrated.py

With ``--method nepam_threshold`` it sets NEPAM's threshold instead, so
that each clip keeps the tokens its content needs and the clips' mean FLOPs
meet the target (read off their window scores; the checkpoint's KL and
agreement are reported; ``--held-out test`` checks the mean on another
split); see :mod:`mmtokred.experiments.threshold_budget`.

Runs the dense model once on CLIPS clips of the config's SPLIT data set
(through its validation pipeline), then searches the method's free
parameters (how the removal spreads over the blocks, NEPAM's ratio and
window, thresholds, proportional attention), each shape at the least
reduction within the target FLOPs ratio, for the schedule whose class
distributions are closest to dense (mean KL, agreement as the tie-break);
see :mod:`mmtokred.experiments.calibration` for the search. Prints the
candidates tried and writes a config inheriting CONFIG that changes only
``model.backbone.token_reduction``; use it with tools/test.py and
tools/dist_test.sh. It reports as it goes: the clips and the dense pass,
the default shape with the time a candidate takes, a line per round of
the search and the round it converged in. Several processes (``bash
tools/torchrun.sh N tools/calibrate.py ... --launcher pytorch``) share the
forward passes and reach the same schedule.
"""
import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from mmengine.config import Config, DictAction
from mmengine.dist import get_dist_info, init_dist, is_distributed
from mmengine.registry import init_default_scope

from mmtokred import checkpoint_fit, plugin, upstream_fixes  # noqa: F401
from mmtokred.arguments import integer, open_share
from mmtokred.console import duration
from mmtokred.experiments.calibrated_config import calibrated_config
from mmtokred.experiments.calibration import Calibrator, format_candidates
from mmtokred.experiments.clips import SPLITS, Clips, recogniser
from mmtokred.experiments.recipes import NEPAM_DEFAULT, model_grid
from mmtokred.experiments.search_space import METHODS, SearchSpace
from mmtokred.experiments.threshold_budget import ThresholdBudget, mean_flops

#: The method that sets NEPAM's threshold for a mean FLOPs target.
THRESHOLD_METHOD = 'nepam_threshold'
#: Where the clips come from and whose pipeline prepares them, in the order
#: tried when not given: the first the config has.
SPLIT_ORDER = ('train', 'val', 'test')
PIPELINE_ORDER = ('val', 'test')
#: z of a two-sided 95% interval.
Z95 = 1.96


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--flops', required=True, type=open_share(
        ' (1 is dense: nothing to calibrate)'),
                        help='FLOPs target as a fraction of dense, in (0, 1)')
    parser.add_argument('--method', default='nepam+tome',
                        choices=(*METHODS, THRESHOLD_METHOD))
    parser.add_argument('--clips', type=integer(1), default=256,
                        help='calibration clips (default 256)')
    parser.add_argument('--split', choices=SPLITS,
                        help='data set the clips come from (default: the '
                        'first of train, val, test the config has)')
    parser.add_argument('--pipeline', choices=SPLITS,
                        help='whose pipeline prepares them (default: val, '
                        "one view per clip in MMAction2's configs, or test "
                        'where the config has no val loader)')
    parser.add_argument('--seed', type=integer(0), default=0,
                        help='of the sample of clips')
    parser.add_argument('--batch-size', type=integer(1),
                        help="default: the pipeline's data loader's")
    parser.add_argument('--proportional-attention', action='store_true',
                        help='start from proportional attention on (the '
                        'search also tries it switched)')
    parser.add_argument('--options', nargs='+', action=DictAction,
                        default={}, help="options of the method's block "
                        "reducer, e.g. importance=received")
    parser.add_argument('--held-out', choices=SPLITS,
                        help=f'{THRESHOLD_METHOD}: also report the mean FLOPs '
                        'on CLIPS clips of this split (another list than '
                        '--split\'s)')
    parser.add_argument('--tolerance', type=open_share(), default=0.02,
                        help=f'{THRESHOLD_METHOD}: how close to the target '
                        'the mean FLOPs of all clips should be known (95%%; '
                        'default 0.02 of dense): a warning says when CLIPS '
                        'are too few')
    parser.add_argument('--out', required=True,
                        help='the config to write')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if not args.out.endswith('.py') or os.path.isdir(args.out):
        parser.error(f'--out must name the .py config file to write, got '
                     f'{args.out!r}')
    if args.held_out and args.method != THRESHOLD_METHOD:
        parser.error(f'--held-out is an option of --method {THRESHOLD_METHOD}'
                     ' (the other methods fix every clip\'s FLOPs)')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def loaders(cfg: Config) -> list:
    """The splits the config has a data loader for."""
    return [split for split in SPLITS if cfg.get(f'{split}_dataloader')]


def choose_splits(args, cfg: Config) -> None:
    """Set ``args.split`` and ``args.pipeline`` to the config's first of
    :data:`SPLIT_ORDER` and :data:`PIPELINE_ORDER` where not given; stop
    naming the loaders the config has where it lacks one asked for, or
    where ``--held-out`` would read the clips of ``--split``."""
    have = loaders(cfg)
    for flag, order in (('split', SPLIT_ORDER),
                        ('pipeline', PIPELINE_ORDER)):
        chosen = getattr(args, flag)
        if chosen is None:
            chosen = next((name for name in order if name in have), None)
            setattr(args, flag, chosen)
        if chosen not in have:
            raise SystemExit(
                f'--{flag} {chosen or "(default)"}: {args.config} has no '
                f'{chosen or " / ".join(order)}_dataloader; it has '
                f'{", ".join(f"{s}_dataloader" for s in have) or "none"}: '
                f'pass --{flag} one of {", ".join(have) or "them"}')
    if args.held_out:
        if args.held_out not in have:
            raise SystemExit(f'--held-out {args.held_out}: {args.config} '
                             f'has no {args.held_out}_dataloader; it has '
                             f'{", ".join(have)}')
        lists = {name: cfg[f'{name}_dataloader'].dataset.get('ann_file')
                 for name in (args.split, args.held_out)}
        if lists[args.split] == lists[args.held_out]:
            raise SystemExit(
                f'--held-out {args.held_out} reads the same list as --split '
                f'{args.split} ({lists[args.split]}): a held-out mean needs '
                'other clips; hold out a split with another ann_file')


def main():
    args = parse_args()
    started = time.perf_counter()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    choose_splits(args, cfg)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    cfg.launcher = args.launcher
    upstream_fixes.prepare_cpu_distributed(cfg)  # gloo without CUDA
    if args.launcher != 'none' and not is_distributed():
        init_dist(args.launcher)
    try:
        calibrate(args, cfg, started)
    finally:
        upstream_fixes.finish_distributed()


def calibrate(args, cfg, started):
    if args.method == THRESHOLD_METHOD:
        return calibrate_threshold(args, cfg, started)
    rank, world = get_dist_info()
    grid = model_grid(cfg)
    try:
        space = SearchSpace(args.method, grid.depth, grid.tokens,
                            dict(args.options))
    except ValueError as error:
        raise SystemExit(f'--options: {error}')
    model = recogniser(cfg, args.checkpoint)  # before any clip is decoded
    if rank == 0:
        print(f'calibrating {args.method} to <= {args.flops} of the dense '
              f'FLOPs: decoding up to {args.clips} clips of the '
              f'{args.split} set ({args.pipeline} pipeline), then the dense '
              f'model on them, {world} process{"es" if world > 1 else ""}',
              flush=True)
    clips = Clips(cfg, args.split, args.pipeline, args.clips, args.seed,
                  args.batch_size)
    calibrator = Calibrator(cfg, model, space, clips)
    if rank == 0:
        print(f'{len(clips)} clips decoded and run dense in '
              f'{duration(time.perf_counter() - started)}', flush=True)
    best, tried = calibrator.search(args.flops, args.proportional_attention)
    minutes = (time.perf_counter() - started) / 60
    if rank != 0:
        return
    reduction = best.reduction
    print(format_candidates(tried))
    figures = (f'FLOPs {best.flops_ratio:.3f} of dense, mean KL '
               f'{best.kl:.4g}, agreement {100 * best.agreement:.1f}%')
    print(f'\nchosen ({len(tried)} candidates, {minutes:.1f} min, '
          f'{world} process{"es" if world > 1 else ""}): {figures}')
    print('token_reduction =', json.dumps(reduction))
    notes = [
        f'Calibrated by tools/calibrate.py: {args.method} at <= {args.flops} '
        'of the dense FLOPs,',
        f'on {len(clips)} clips of {clips.source} (seed {args.seed}, '
        f'{args.pipeline} pipeline)',
        f'with {args.checkpoint} ({minutes:.1f} min). '
        'On those clips:', f'{figures}.',
    ]
    write_config(args, reduction, notes)


def write_config(args, reduction, notes):
    base_backbone = Config.fromfile(args.config).model.backbone
    text = calibrated_config(args.config, reduction,
                             'token_reduction' in base_backbone, notes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f'wrote {args.out}')


def mean_error(per_clip: torch.Tensor, within: float):
    """The 95% error of the clips' mean FLOPs (``Z95`` standard errors of
    the mean) and the clips that bring it to ``within``."""
    n = len(per_clip)
    std = float(per_clip.std()) if n > 1 else math.inf
    error = Z95 * std / math.sqrt(n)
    needed = math.ceil((Z95 * std / within) ** 2) if n > 1 else 2
    return error, max(needed, 2)


def calibrate_threshold(args, cfg, started):
    """NEPAM's threshold for a mean FLOPs target (window and distance from
    ``--options``), with the checkpoint's KL and agreement at it."""
    rank, world = get_dist_info()
    options = dict(args.options)
    window = tuple(options.pop('window', NEPAM_DEFAULT['window']))
    distance = options.pop('distance', 'l1')
    if options:
        raise SystemExit(f'--options of {THRESHOLD_METHOD}: window and '
                         f'distance only, got {sorted(options)}')
    try:
        budget = ThresholdBudget(cfg.model, window, distance,
                                 args.proportional_attention)
    except ValueError as error:
        raise SystemExit(f'--options: {error}')
    model = recogniser(cfg, args.checkpoint)  # before any clip is decoded
    clips = Clips(cfg, args.split, args.pipeline, args.clips, args.seed,
                  args.batch_size)
    scores = clips.gather(budget.scores(cfg, clips.batches))
    try:
        threshold = budget.threshold_for(scores, args.flops)
    except ValueError as error:  # the window cannot reach the target
        raise SystemExit(f'--flops {args.flops}: {error}')
    per_clip = budget.clip_flops(scores, threshold)
    reduction = budget.reduction(threshold)
    dense = clips.class_distributions(model)
    model.backbone.set_token_reduction(reduction)
    reduced = clips.class_distributions(model)
    # KL is never negative: below 0 is rounding (a threshold that merges
    # nothing gives the dense distributions back).
    kl = max(float((dense.exp() * (dense - reduced)).sum(-1).mean()), 0.)
    agreement = float((reduced.argmax(-1) == dense.argmax(-1)).double()
                      .mean())
    lines = []
    if args.held_out:
        held = Clips(cfg, args.held_out, args.pipeline, args.clips,
                     args.seed, args.batch_size)
        held_scores = held.gather(budget.scores(cfg, held.batches))
        lines.append(f'held out: {len(held)} clips of {held.source}: mean '
                     f'FLOPs {mean_flops(budget, held_scores, threshold):.3f}'
                     ' of dense')
    if rank != 0:
        return
    minutes = (time.perf_counter() - started) / 60
    quantiles = [float(q) for q in per_clip.quantile(
        torch.tensor([0.1, 0.5, 0.9], dtype=per_clip.dtype))]
    error, needed = mean_error(per_clip, args.tolerance)
    figures = (f'mean FLOPs {float(per_clip.mean()):.3f} of dense, '
               f'+-{error:.3f} (95%) for all clips like them (10/50/90% '
               f'of the clips at {quantiles[0]:.2f} / {quantiles[1]:.2f} / '
               f'{quantiles[2]:.2f}), mean KL {kl:.4g}, agreement '
               f'{100 * agreement:.1f}%')
    if len(per_clip) < needed:
        lines.insert(0, (
            f'warning: {len(per_clip)} clips are too few to know the mean '
            f'FLOPs within +-{args.tolerance} of dense (95%): these clips\' '
            f'FLOPs spread {float(per_clip.std()):.3f}, which needs about '
            f'{needed} clips; pass --clips {needed} or more (or a wider '
            '--tolerance)'))
    print(f'NEPAM {window} threshold {threshold:.6g} on {len(clips)} clips '
          f'({minutes:.1f} min, {world} process{"es" if world > 1 else ""})'
          f': {figures}')
    for line in lines:
        print(line)
    print('token_reduction =', json.dumps(reduction))
    notes = [f'Calibrated by tools/calibrate.py: NEPAM threshold for a mean '
             f'of {args.flops} of the dense FLOPs,',
             f'on {len(clips)} clips of {clips.source} (seed {args.seed}, '
             f'{args.pipeline} pipeline), with {args.checkpoint}. On those '
             'clips:', f'{figures}.', *lines]
    write_config(args, reduction, notes)


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
