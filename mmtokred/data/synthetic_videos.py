"""Generated action clips over real photographs (:mod:`.actions`, filmed
by :mod:`.camera`), written in MMAction2's VideoDataset format with the
ground truth of which tokens matter (:mod:`.token_grid`).

The mp4 encoder compresses the clips once more after the renderer's JPEG.

Next to each split's list ``{split}.txt`` the writer stores
``{split}_actor.npy``: ``(clips, T', H', W')`` booleans, True where the actor
covers at least ``MIN_COVER`` of a tubelet of the model's token grid (the
frames that MMAction2's ``SampleFrames`` takes in test mode, grouped by
``tubelet_size``, cut into ``patch_size`` squares): the ground truth of which
tokens matter, for the object-retention figure of ``tools/sweep.py``.
"""
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .actions import ACTIONS, render_clip_with_mask
from .camera import Camera
from .token_grid import TokenGrid, tubelet_mask

# Clips per class in each split of write_action_dataset.
SPLITS = {'train': 400, 'val': 50, 'test': 200}


def _write_split(video_dir: Path, prefix: str, num_videos: int,
                 num_classes: int, rng: np.random.Generator, num_frames: int,
                 size: int, fps: int,
                 grid: Optional[TokenGrid], camera: Camera = Camera()
                 ) -> Tuple[str, Optional[np.ndarray]]:
    lines, actor = [], []
    for index in range(num_videos):
        label = index % num_classes
        name = f'{prefix}{index:05d}.mp4'
        frames, masks = render_clip_with_mask(rng, label, num_frames, size,
                                              camera)
        _write_mp4(video_dir / name, frames, fps)
        if grid is not None:
            actor.append(tubelet_mask(masks, grid))
        lines.append(f'{name} {label}')
    return '\n'.join(lines) + '\n', np.stack(actor) if actor else None


def _check(num_frames: int, size: int, fps: int,
           grid: Optional[TokenGrid] = None) -> None:
    for name, value, low in (('num_frames', num_frames, 2), ('size', size, 16),
                             ('fps', fps, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    if grid is None:
        return
    grid.frames(num_frames)  # raises if the clip is too short
    if grid.clip_len % grid.tubelet_size or size % grid.patch_size:
        raise ValueError(f'grid {grid} does not tile {grid.clip_len} frames '
                         f'of {size}x{size}')


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
    lines, _ = _write_split(video_dir, 'clip_', num_videos, num_classes,
                            np.random.default_rng(seed), num_frames, size,
                            fps, None)
    ann_file.write_text(lines)
    return video_dir, ann_file


def write_action_dataset(out_dir: str,
                         videos_per_class: Mapping[str, int] = SPLITS,
                         num_frames: int = 32,
                         size: int = 64,
                         fps: int = 16,
                         seed: int = 0,
                         grid: TokenGrid = TokenGrid(),
                         camera: Camera = Camera()) -> Dict[str, Path]:
    """Write all actions in splits under ``out_dir/videos``, one list and
    one actor-mask file (``{split}_actor.npy``, see :func:`tubelet_mask`)
    each.

    Args:
        videos_per_class: clips per class for each split, default
            ``SPLITS``.
        grid: the token grid of the model the masks are for.
        camera: how the clips are filmed.

    Returns:
        ``{'videos': folder, split: list, f'{split}_actor': masks, ...}``.
    """
    for name, count in videos_per_class.items():
        if not isinstance(count, int) or count < 1:
            raise ValueError(f'videos_per_class[{name!r}] must be a positive '
                             f'integer, got {count}')
    _check(num_frames, size, fps, grid)
    camera.check()
    video_dir = Path(out_dir) / 'videos'
    video_dir.mkdir(parents=True, exist_ok=True)
    paths: Dict[str, Path] = {'videos': video_dir}
    for split_index, (split, count) in enumerate(videos_per_class.items()):
        # One generator per split: the test split stays the same whatever
        # the size of the training split.
        rng = np.random.default_rng([seed, split_index])
        lines, actor = _write_split(video_dir, f'{split}_',
                                    count * len(ACTIONS), len(ACTIONS), rng,
                                    num_frames, size, fps, grid, camera)
        paths[split] = Path(out_dir) / f'{split}.txt'
        paths[split].write_text(lines)
        paths[f'{split}_actor'] = Path(out_dir) / f'{split}_actor.npy'
        np.save(paths[f'{split}_actor'], actor)
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
