"""A small Kinetics-format (VideoDataset) data set of generated clips.

Class ``k`` of ``num_classes`` is a square moving in direction
``2*pi*k/num_classes`` over a flat or textured background, so the label is
defined by motion and clips hold both flat regions and static background.
"""
import math
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np


def _clip(rng: np.random.Generator, label: int, num_classes: int,
          num_frames: int, size: int) -> np.ndarray:
    if rng.random() < 0.5:
        background = np.full((size, size, 3), rng.integers(0, 256, 3),
                             np.uint8)
    else:
        tile = rng.integers(0, 256, (size // 8 + 1, size // 8 + 1, 3),
                            dtype=np.uint8)
        background = np.kron(tile, np.ones((8, 8, 1), np.uint8))[:size, :size]
    side = size // 4
    angle = 2 * math.pi * label / num_classes
    speed = size / (2 * num_frames)
    start = rng.uniform(size / 2 - side / 2 - size / 8,
                        size / 2 - side / 2 + size / 8, 2)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        x = int(start[0] + (t - num_frames / 2) * speed * math.cos(angle))
        y = int(start[1] + (t - num_frames / 2) * speed * math.sin(angle))
        cv2.rectangle(frame, (x, y), (x + side, y + side), color, -1)
        frames[t] = frame
    return frames


def write_video_dataset(out_dir: str,
                        num_videos: int = 12,
                        num_classes: int = 4,
                        num_frames: int = 32,
                        size: int = 64,
                        fps: int = 16,
                        seed: int = 0) -> Tuple[Path, Path]:
    """Write ``num_videos`` mp4 clips and their annotation list.

    Returns:
        The video folder and the annotation file (``name label`` per line),
        ready for ``VideoDataset(ann_file=..., data_prefix=dict(video=...))``.
    """
    for name, value, low in (('num_videos', num_videos, 1),
                             ('num_classes', num_classes, 1),
                             ('num_frames', num_frames, 1), ('size', size, 8),
                             ('fps', fps, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    video_dir = Path(out_dir) / 'videos'
    video_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines: List[str] = []
    for index in range(num_videos):
        label = index % num_classes
        name = f'clip_{index:05d}.mp4'
        writer = cv2.VideoWriter(
            str(video_dir / name), cv2.VideoWriter_fourcc(*'mp4v'), fps,
            (size, size))
        if not writer.isOpened():
            raise RuntimeError(f'OpenCV cannot write {video_dir / name}')
        for frame in _clip(rng, label, num_classes, num_frames, size):
            writer.write(frame[..., ::-1])  # OpenCV writes BGR
        writer.release()
        lines.append(f'{name} {label}')
    ann_file = Path(out_dir) / 'annotations.txt'
    ann_file.write_text('\n'.join(lines) + '\n')
    return video_dir, ann_file
