"""Write the synthetic action data set (10 motion classes, train/val/test).

    python tools/make_action_dataset.py data/actions [--train 400] [--val 50]
        [--test 200] [--frames 32] [--size 64] [--seed 0]

Counts are clips per class. Beside each list, ``{split}_actor.npy`` holds the
actor masks per tubelet of the proxy model's grid. The defaults (6500 clips)
take about 3 minutes on one core.
"""
import argparse
import time

from mmtokred.data import ACTIONS, SPLITS, write_action_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir')
    for split, count in SPLITS.items():
        parser.add_argument(f'--{split}', type=int, default=count)
    parser.add_argument('--frames', type=int, default=32)
    parser.add_argument('--size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    paths = write_action_dataset(
        args.out_dir, dict(train=args.train, val=args.val, test=args.test),
        num_frames=args.frames, size=args.size, seed=args.seed)
    total = (args.train + args.val + args.test) * len(ACTIONS)
    print(f'wrote {total} clips of {len(ACTIONS)} actions to '
          f"{paths['videos']} in {time.time() - start:.0f} s; lists: "
          + ', '.join(str(paths[s]) for s in ('train', 'val', 'test')))


if __name__ == '__main__':
    main()
