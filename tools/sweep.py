"""Evaluate dense and every token-reduction method over a range of budgets.

    python tools/sweep.py CONFIG CHECKPOINT [--methods nepam tome ...]
        [--work-dir work_dirs/sweep] [--repeats 3]

Runs MMAction2's test loop on the config's test set for each point and
writes WORK_DIR/sweep.csv, sweep.json and sweep.png (top-1 against GFLOPs and
against measured speedup). Works the same on Kinetics with an official
checkpoint as on the generated proxy.
"""
import argparse
from pathlib import Path

from mmengine.config import DictAction

import mmtokred  # noqa: F401  (applies upstream fixes, registers modules)
from mmtokred.sweep import (METHODS, at_half_flops, plot_pareto, sweep,
                            write_table)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=list(METHODS))
    parser.add_argument('--work-dir', default='work_dirs/sweep')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed passes per point for the speedup')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args()
    rows = sweep(args.config, args.checkpoint, args.methods,
                 work_dir=args.work_dir, repeats=args.repeats,
                 cfg_options=args.cfg_options)
    prefix = str(Path(args.work_dir) / 'sweep')
    write_table(rows, prefix)
    plot_pareto(rows, prefix + '.png', title=Path(args.config).stem)
    print(f"\n{'method':<12}{'budget':>7}{'top-1':>8}{'agree':>8}"
          f"{'GFLOPs':>9}{'FLOPs':>7}{'speedup':>9}")
    def show(r):
        print(f"{r['method']:<12}{r['budget']:>7.2f}{100 * r['top1']:>8.2f}"
              f"{100 * r['agreement']:>8.1f}{r['gflops']:>9.3f}"
              f"{r['flops_ratio']:>7.2f}{r['speedup']:>9.2f}")

    for r in rows:
        show(r)
    print('\nclosest to half the FLOPs of dense:')
    show(rows[0])
    for r in at_half_flops(rows):
        show(r)
    print(f'wrote {prefix}.csv, {prefix}.json, {prefix}.png')


if __name__ == '__main__':
    main()
