"""NEPAM threshold mode: padded batch vs clip by clip, side by side.

    python tools/benchmark_threshold.py configs/videomae_nepam.py \
        --threshold 0.5 [--batch-size 4] [--repeats 3] [--json out.json]
"""
import argparse
import json

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred.benchmark.threshold import compare_padding


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a config with a NEPAM input stage')
    parser.add_argument('--threshold', type=float, required=True,
                        help='merge every window scoring under this')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', help='also write the figures here')
    args = parser.parse_args()
    result = compare_padding(args.config, args.threshold, args.batch_size,
                             args.repeats)
    print(f"{result['config']}, threshold {result['threshold']}: tokens per "
          f"clip {result['tokens_per_clip']}, padded to "
          f"{result['padded_length']}")
    print(f"padded batch {result['seconds_padded_batch']:.3f} s (spread "
          f"{100 * result['spread_padded_batch']:.1f}%), clip by clip "
          f"{result['seconds_clip_by_clip']:.3f} s (spread "
          f"{100 * result['spread_clip_by_clip']:.1f}%): padding is "
          f"{result['padded_speedup']:.2f}x as fast; max |batched - single| "
          f"= {result['max_abs_diff']:.1e}")
    print("spread: (max - min) / median of the repeats' times")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
