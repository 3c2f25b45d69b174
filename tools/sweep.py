"""Evaluate dense and every token-reduction method at a range of FLOPs.

    python tools/sweep.py CONFIG CHECKPOINT [CHECKPOINT ...]
        [--methods nepam tome ppt:threshold=1.5 ...]
        [--flops 0.7 0.5 0.35 0.25] [--configs CALIBRATED.py ...]
        [--work-dir work_dirs/sweep] [--repeats 3] [--cfg-options ...]
    python tools/sweep.py CONFIG --replot SWEEP.csv
    python tools/sweep.py --histogram SWEEP.json

For each method and FLOPs target (a fraction of dense; default: the
method's own targets) finds the least reduction within the target, runs
the config's test set through it for every checkpoint (several independently
trained models: figures are printed as ``a / b``), and writes
WORK_DIR/sweep.csv, sweep.json and sweep.png (top-1 against FLOPs and
measured speedup, and object retention against FLOPs). Works the same on
Kinetics with an official checkpoint as on the generated proxy.

The speedup is timed with every point and dense taking turns in each of
--repeats passes (as tools/benchmark.py times); a point whose passes spread
by more than 20% of their median is marked noisy: ``*`` after its speed in
the table, ``noisy`` and ``speed_spread`` in the CSV and JSON. It says what
it is doing as it goes: a line per phase with an estimate of its time, then
the evaluation's progress bar.

``--replot`` draws the plot of an earlier sweep again from its CSV (e.g.
docs/proxy_sweep.csv, titled by CONFIG's name) beside it, as SWEEP.png,
with no checkpoint or data. Points whose tokens depend on each clip (a
threshold) get a histogram of the FLOPs each test clip spent, printed after
the table; ``--histogram`` prints them again from an earlier sweep's JSON.
"""
import argparse
import json
from pathlib import Path

from mmengine.config import DictAction

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred import checkpoint_fit
from mmtokred.experiments.recipes import METHODS
from mmtokred.experiments.pareto_plot import plot_pareto
from mmtokred.experiments.sweep import sweep
from mmtokred.experiments.sweep_table import (format_histograms,
                                              format_sweep, read_table,
                                              write_table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?',
                        help='the config of the sweep (not needed with '
                        '--histogram)')
    parser.add_argument('checkpoints', nargs='*', metavar='checkpoint')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        help='names of methods (default: all), each may be '
                        "NAME:KEY=VALUE,... to change options of its reducer, "
                        f"e.g. ppt:threshold=1.5; names: {', '.join(METHODS)}")
    parser.add_argument('--flops', nargs='+', type=float,
                        help='FLOPs targets as fractions of dense (default: '
                        "each method's own)")
    parser.add_argument('--configs', nargs='+', default=[],
                        help='config files whose token reduction is '
                        'evaluated as configured (e.g. calibrated ones); '
                        '{model} in a path stands for the index of the '
                        'checkpoint')
    parser.add_argument('--work-dir', default='work_dirs/sweep')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed passes per point for the speedup, '
                        'the points taking turns (>= 2 to tell whether a '
                        'point is noisy)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--replot', metavar='SWEEP.csv',
                        help="only draw an earlier sweep's plot again, from "
                        'its CSV, as SWEEP.png')
    parser.add_argument('--histogram', metavar='SWEEP.json',
                        help="only print an earlier sweep's histograms of "
                        'the FLOPs per clip, from its JSON')
    args = parser.parse_args()
    if args.histogram:
        try:
            with open(args.histogram) as f:
                rows = json.load(f)
        except (OSError, ValueError) as exc:
            parser.error(f'--histogram {args.histogram}: not a sweep\'s JSON '
                         f'({exc})')
        print(format_histograms(rows) or
              f'{args.histogram} has no point whose tokens depend on the '
              'clip')
        return
    if args.config is None:
        parser.error('--replot needs CONFIG (its name titles the plot)'
                     if args.replot else 'give CONFIG and at least one '
                     'CHECKPOINT (only --histogram goes without a config)')
    title = Path(args.config).stem
    if args.replot:
        out = str(Path(args.replot).with_suffix('.png'))
        plot_pareto(read_table(args.replot), out, title=title)
        print(f'wrote {out}')
        return
    if not args.checkpoints:
        parser.error('give at least one checkpoint (or --replot)')
    rows = sweep(args.config, args.checkpoints, args.methods,
                 targets=args.flops, repeats=args.repeats,
                 cfg_options=args.cfg_options, configs=args.configs)
    prefix = str(Path(args.work_dir) / 'sweep')
    write_table(rows, prefix)
    plot_pareto(rows, prefix + '.png', title=title)
    print('\n' + format_sweep(rows))
    histograms = format_histograms(rows)
    if histograms:
        print('\nFLOPs per clip of the points whose tokens depend on the '
              'clip:\n' + histograms)
    print(f'wrote {prefix}.csv, {prefix}.json, {prefix}.png')


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
