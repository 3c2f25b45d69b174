"""Write a small Kinetics-format video data set of generated clips.

    python tools/make_videos.py OUT_DIR [--num-videos 12] [--num-classes 4]
"""
import argparse

from mmtokred.data import write_video_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='where videos/ and annotations.txt go')
    parser.add_argument('--num-videos', type=int, default=12)
    parser.add_argument('--num-classes', type=int, default=4)
    parser.add_argument('--num-frames', type=int, default=32)
    parser.add_argument('--size', type=int, default=64, help='frame side')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    video_dir, ann_file = write_video_dataset(
        args.out_dir, num_videos=args.num_videos,
        num_classes=args.num_classes, num_frames=args.num_frames,
        size=args.size, seed=args.seed)
    print(f'wrote {args.num_videos} clips to {video_dir}, list {ann_file}')


if __name__ == '__main__':
    main()
