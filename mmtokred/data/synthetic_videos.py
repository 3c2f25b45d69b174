"""Generated action clips in MMAction2's VideoDataset format.

Each clip shows one object (square, disc or triangle) over a flat or textured
background, with a slow camera drift, doing one action:

    0 moves right   1 moves left   2 moves down   3 moves up
    4 moves fast (any of the four ways, twice the speed)
    5 turns (either way)   6 grows   7 shrinks   8 appears   9 disappears

Turning either way is one class: the proxy model (4 blocks, 8x8 tubelets,
trained for 20 minutes) stayed at chance between clockwise and anticlockwise
in two versions of this generator, and a class the dense model can only guess
says nothing about what token reduction keeps.

The class is only visible over time, flat and static backgrounds give the
spatial and temporal redundancy token reduction feeds on, and clips are
written in MMAction2's VideoDataset format (mp4 files + ``name label`` list)
with train, val and test splits.
"""
import math
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

import cv2
import numpy as np

ACTIONS = ('moves right', 'moves left', 'moves down', 'moves up',
           'moves fast', 'turns', 'grows', 'shrinks', 'appears', 'disappears')
# Clips per class in each split of write_action_dataset.
SPLITS = {'train': 600, 'val': 50, 'test': 100}


def _background(rng: np.random.Generator, size: int, margin: int) -> np.ndarray:
    full = size + 2 * margin
    if rng.random() < 0.5:
        colour = rng.integers(0, 256, 3)
        return np.broadcast_to(colour, (full, full, 3)).astype(np.uint8)
    # Low-contrast blurred tiles around a base colour: texture that still
    # lets the object stand out.
    cell = int(rng.integers(4, 12))
    base = rng.integers(40, 216, 3)
    tiles = base + rng.integers(-40, 41, (full // cell + 1, full // cell + 1,
                                          3))
    texture = np.kron(tiles, np.ones((cell, cell, 1)))[:full, :full]
    texture = cv2.GaussianBlur(texture.astype(np.float32), (0, 0), cell / 3)
    return np.clip(texture, 0, 255).astype(np.uint8)


def _object_colour(rng: np.random.Generator,
                   background: np.ndarray) -> Tuple[int, int, int]:
    # Redrawn until it stands out from the background: an object of the
    # background's colour would make its clip's label unknowable.
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() >= 120:
            return tuple(int(c) for c in colour)


def _polygon(shape: str, centre: np.ndarray, radius: float,
             angle: float) -> np.ndarray:
    corners = {'square': 4, 'triangle': 3}[shape]
    turns = angle + np.arange(corners) * 2 * math.pi / corners
    points = centre + radius * np.stack([np.cos(turns), np.sin(turns)], 1)
    return points.round().astype(np.int32)


def render_clip(rng: np.random.Generator, label: int, num_frames: int,
                size: int) -> np.ndarray:
    """``(num_frames, size, size, 3)`` RGB frames of action ``label``."""
    if not 0 <= label < len(ACTIONS):
        raise ValueError(f'label must be in [0, {len(ACTIONS) - 1}], got '
                         f'{label}')
    margin = size // 4
    background = _background(rng, size, margin)
    shape = ('square', 'disc', 'triangle')[int(rng.integers(3))]
    colour = _object_colour(rng, background.mean((0, 1)))
    spoke = (0, 0, 0) if sum(colour) > 3 * 255 / 2 else (255, 255, 255)
    radius = size * rng.uniform(0.15, 0.22)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-size / 10,
                                                          size / 10, 2)
    drift = rng.uniform(-0.3, 0.3, 2)  # camera, in pixels per frame
    heading = np.array(((1, 0), (-1, 0), (0, 1), (0, -1)))[
        label if label < 4 else int(rng.integers(4))]
    speed = size * (0.8 if label == 4 else 0.4) / num_frames
    spin = 1.5 * math.pi / num_frames * rng.choice((-1, 1))  # 3/4 of a turn
    angle0 = rng.uniform(0, 2 * math.pi)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        offset = (t - num_frames / 2) * speed
        position, r, angle, visible = centre.copy(), radius, angle0, True
        if label <= 4:
            position += heading * offset
        elif label == 5:
            angle = angle0 + spin * t
        elif label == 6:
            r = radius * (0.5 + progress)
        elif label == 7:
            r = radius * (1.5 - progress)
        elif label == 8:
            visible = progress >= 0.5
        else:
            visible = progress < 0.5
        shift = (drift * t).round().astype(int) + margin
        frame = np.ascontiguousarray(
            background[shift[1]:shift[1] + size, shift[0]:shift[0] + size])
        if visible:
            centre_px = tuple(position.round().astype(int))
            if shape == 'disc':
                cv2.circle(frame, centre_px, int(round(r)), colour, -1)
            else:
                cv2.fillPoly(frame, [_polygon(shape, position, r, angle)],
                             colour)
            # A contrasting spoke from the centre to the first corner: a disc
            # shows no turn without it.
            tip = position + r * np.array([math.cos(angle), math.sin(angle)])
            cv2.line(frame, centre_px, tuple(tip.round().astype(int)),
                     spoke, max(2, size // 24))
        frames[t] = frame
    return frames


def _write_split(video_dir: Path, prefix: str, num_videos: int,
                 num_classes: int, rng: np.random.Generator, num_frames: int,
                 size: int, fps: int) -> str:
    lines = []
    for index in range(num_videos):
        label = index % num_classes
        name = f'{prefix}{index:05d}.mp4'
        _write_mp4(video_dir / name, render_clip(rng, label, num_frames, size),
                   fps)
        lines.append(f'{name} {label}')
    return '\n'.join(lines) + '\n'


def _check(num_frames: int, size: int, fps: int) -> None:
    for name, value, low in (('num_frames', num_frames, 2), ('size', size, 16),
                             ('fps', fps, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')


def write_video_dataset(out_dir: str,
                        num_videos: int = 12,
                        num_classes: int = 4,
                        num_frames: int = 32,
                        size: int = 64,
                        fps: int = 16,
                        seed: int = 0) -> Tuple[Path, Path]:
    """Write ``num_videos`` clips of the first ``num_classes`` actions.

    Returns:
        The video folder and the annotation file (``name label`` per line),
        ready for ``VideoDataset(ann_file=..., data_prefix=dict(video=...))``.
    """
    if num_videos < 1:
        raise ValueError(f'num_videos must be >= 1, got {num_videos}')
    if not 1 <= num_classes <= len(ACTIONS):
        raise ValueError(f'num_classes must be in [1, {len(ACTIONS)}], got '
                         f'{num_classes}')
    _check(num_frames, size, fps)
    video_dir = Path(out_dir) / 'videos'
    video_dir.mkdir(parents=True, exist_ok=True)
    ann_file = Path(out_dir) / 'annotations.txt'
    ann_file.write_text(
        _write_split(video_dir, 'clip_', num_videos, num_classes,
                     np.random.default_rng(seed), num_frames, size, fps))
    return video_dir, ann_file


def write_action_dataset(out_dir: str,
                         videos_per_class: Mapping[str, int] = SPLITS,
                         num_frames: int = 32,
                         size: int = 64,
                         fps: int = 16,
                         seed: int = 0) -> Dict[str, Path]:
    """Write all actions in splits under ``out_dir/videos``, one list each.

    Args:
        videos_per_class: clips per class for each split, default
            ``SPLITS``.

    Returns:
        ``{'videos': folder, 'train': list, 'val': list, 'test': list}``.
    """
    for name, count in videos_per_class.items():
        if not isinstance(count, int) or count < 1:
            raise ValueError(f'videos_per_class[{name!r}] must be a positive '
                             f'integer, got {count}')
    _check(num_frames, size, fps)
    video_dir = Path(out_dir) / 'videos'
    video_dir.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {'videos': video_dir}
    for split_index, (split, count) in enumerate(videos_per_class.items()):
        # One generator per split: the test split stays the same whatever
        # the size of the training split.
        rng = np.random.default_rng([seed, split_index])
        paths[split] = Path(out_dir) / f'{split}.txt'
        paths[split].write_text(
            _write_split(video_dir, f'{split}_', count * len(ACTIONS),
                         len(ACTIONS), rng, num_frames, size, fps))
    return paths


def _write_mp4(path: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps,
                             (width, height))
    if not writer.isOpened():
        raise RuntimeError(f'OpenCV cannot write {path}')
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))  # BGR
    writer.release()
