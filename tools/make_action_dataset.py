"""Write the synthetic action data set (10 motion classes, train/val/test).

    python tools/make_action_dataset.py data/actions [--train 400] [--val 50]
        [--test 200] [--frames 32] [--size 64] [--seed 0]
        [--camera-still 0.7] [--camera-pan 0.1] [--camera-shake 0.2]
        [--camera-zoom 0.15] [--camera-view-min 64] [--camera-view-max 0.5]

Counts are clips per class. Beside each list, ``{split}_actor.npy`` holds the
actor masks per tubelet of the proxy model's grid. The defaults (6500 clips)
take about 3 minutes on one core. The ``--camera-*`` options set how the
clips are filmed (``mmtokred.data.Camera``; docs/proxy.md).
"""
import argparse
import time

from mmtokred.data import ACTIONS, SPLITS, Camera, write_action_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir')
    for split, count in SPLITS.items():
        parser.add_argument(f'--{split}', type=int, default=count)
    parser.add_argument('--frames', type=int, default=32)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    for field, default in Camera._field_defaults.items():
        parser.add_argument(f"--camera-{field.replace('_', '-')}",
                            type=float, default=default,
                            help=f'Camera.{field} (default {default})')
    args = parser.parse_args()
    camera = Camera(**{f: getattr(args, f'camera_{f}')
                       for f in Camera._fields})
    start = time.time()
    paths = write_action_dataset(
        args.out_dir, dict(train=args.train, val=args.val, test=args.test),
        num_frames=args.frames, size=args.size, seed=args.seed,
        camera=camera)
    total = (args.train + args.val + args.test) * len(ACTIONS)
    print(f'wrote {total} clips of {len(ACTIONS)} actions to '
          f"{paths['videos']} in {time.time() - start:.0f} s; lists: "
          + ', '.join(str(paths[s]) for s in ('train', 'val', 'test')))


if __name__ == '__main__':
    main()
