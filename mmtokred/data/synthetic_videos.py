"""Generated action clips over real photographs, in MMAction2's VideoDataset
format, with the ground truth of which tokens matter.

Each clip shows one actor (square, disc or triangle with a contrasting
spoke) doing one action over a photograph bundled with scikit-image, filmed
by a hand-held camera:

    0 moves right   1 moves left   2 moves down   3 moves up
    4 moves fast (any of the four ways, twice the speed)
    5 turns (either way)   6 grows   7 shrinks   8 appears   9 disappears

What makes it look like video rather than a drawing:

- the background is a crop of a real photograph (astronaut, coffee, chelsea,
  rocket, brick, grass, gravel, ...), panned, zoomed, slightly rotated and
  shaken by a smoothed random walk: textured everywhere, with the temporal
  redundancy of real footage but no frame exactly equal to the last;
- 0-2 distractor objects (smaller, no spoke, slower than the actor) move on
  their own random paths;
- sensor noise, then JPEG compression at a random quality per clip, then the
  mp4 encoder.

Turning either way is one class: a small proxy model stays at chance between
clockwise and anticlockwise, and a class the dense model can only guess says
nothing about what token reduction keeps.

Next to each split's list ``{split}.txt`` the writer stores
``{split}_actor.npy``: ``(clips, T', H', W')`` booleans, True where the actor
covers at least ``MIN_COVER`` of a tubelet of the model's token grid (the
frames that MMAction2's ``SampleFrames`` takes in test mode, grouped by
``tubelet_size``, cut into ``patch_size`` squares): the ground truth of which
tokens matter, for the object-retention figure of ``tools/sweep.py``.
"""
import functools
import math
from pathlib import Path
from typing import (Dict, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import cv2
import numpy as np

ACTIONS = ('moves right', 'moves left', 'moves down', 'moves up',
           'moves fast', 'turns', 'grows', 'shrinks', 'appears', 'disappears')
# Clips per class in each split of write_action_dataset.
SPLITS = {'train': 400, 'val': 50, 'test': 200}
# Photographs bundled in scikit-image's wheel (no download).
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'brick', 'grass',
          'gravel', 'camera', 'coins', 'moon', 'clock')
#: Share of a tubelet's pixels the actor must cover to count as actor.
MIN_COVER = 0.1


class Camera(NamedTuple):
    """How the clips are filmed. The defaults were calibrated against real
    footage with tools/redundancy.py (docs/proxy.md): most clips from a
    tripod, the rest hand-held with a gentle pan and shake, framing 64 px
    to half of the photograph. ``HAND_HELD`` is the camera of the proxy
    before that calibration (every clip hand-held)."""
    #: Share of the clips filmed from a tripod: no pan, shake, spin or zoom.
    still: float = 0.7
    #: Largest pan, output pixels per frame.
    pan: float = 0.1
    #: Step of the shake's random walk, output pixels per frame.
    shake: float = 0.2
    #: Largest zoom in or out over a clip, a fraction of the view.
    zoom: float = 0.15
    #: Field of view, photograph pixels across the frame: from this many...
    view_min: float = 64.
    #: ...to this share of the photograph's shorter side.
    view_max: float = 0.5

    def check(self) -> None:
        """Raise ValueError naming the field out of its range."""
        for name, low, high in (('still', 0, 1), ('pan', 0, None),
                                ('shake', 0, None), ('zoom', 0, 0.9),
                                ('view_min', 8, None), ('view_max', 0.05, 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < low or (
                    high is not None and value > high):
                allowed = f'[{low}, {high}]' if high is not None else \
                    f'>= {low}'
                raise ValueError(f'camera {name} must be in {allowed}, got '
                                 f'{value!r}')


#: The camera of every proxy figure before the calibration of issue 22.
HAND_HELD = Camera(still=0., pan=0.25, shake=0.35, zoom=0.15, view_min=120.,
                   view_max=0.75)


class TokenGrid(NamedTuple):
    """How a model samples and cuts a clip into tokens (the proxy's default:
    8 frames, every 4th, tubelets of 2 frames x 8 x 8 pixels)."""
    clip_len: int = 8
    frame_interval: int = 4
    tubelet_size: int = 2
    patch_size: int = 8

    def frames(self, num_frames: int) -> List[int]:
        """The frames ``SampleFrames(clip_len, frame_interval, num_clips=1,
        test_mode=True)`` takes from a clip of ``num_frames``: a span of
        ``(clip_len - 1) * frame_interval + 1`` frames in the middle (1, 5,
        ..., 29 of 32 for the default)."""
        span = (self.clip_len - 1) * self.frame_interval + 1
        if span > num_frames:
            raise ValueError(f'the grid samples a span of {span} frames, the '
                             f'clip has {num_frames}')
        offset = (num_frames - span) // 2
        return [offset + i * self.frame_interval for i in range(self.clip_len)]


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data  # only the generator needs scikit-image
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    return np.ascontiguousarray(image[..., :3]).astype(np.float32)


def _camera(rng: np.random.Generator, name: str, num_frames: int,
            size: int, camera: Camera = Camera()) -> np.ndarray:
    """Background frames: ``camera`` over photograph ``name``."""
    photo = _photo(name)
    if name in ('brick', 'grass', 'gravel', 'camera', 'coins', 'moon',
                'clock'):
        photo = photo * rng.uniform(0.6, 1.25, 3)  # a tint for grey photos
    # Softer contrast, as a background out of focus: still textured
    # everywhere, but the actor can stand out.
    mean = photo.mean((0, 1))
    photo = mean + rng.uniform(0.3, 0.6) * (photo - mean)
    height, width = photo.shape[:2]
    # Pixels of the photograph per output pixel, zooming in or out slowly.
    view = rng.uniform(camera.view_min, camera.view_max * min(height, width))
    zoom = np.linspace(1, rng.uniform(1 - camera.zoom, 1 + camera.zoom),
                       num_frames)
    # Pan in output pixels per frame; shake as a smoothed random walk.
    pan = rng.uniform(-camera.pan, camera.pan, 2)
    shake = np.cumsum(rng.normal(0, camera.shake, (num_frames, 3)), 0)
    shake = cv2.GaussianBlur(shake, (1, 0), 1.5)
    shake[:, 2] *= 0.01  # radians
    spin = rng.uniform(-0.003, 0.003)
    margin = view * 0.75
    centre = np.array([rng.uniform(margin, width - margin),
                       rng.uniform(margin, height - margin)]) if min(
                           height, width) > 2 * margin else np.array(
                               [width / 2, height / 2])
    # Drawn last, and only where some clips rest: the hand-held default
    # draws what it always drew.
    if camera.still > 0 and rng.uniform() < camera.still:
        zoom[:], pan[:], shake[:], spin = 1, 0, 0, 0.
    scale = view / size / zoom
    frames = np.empty((num_frames, size, size, 3), np.float32)
    for t in range(num_frames):
        angle = spin * t + shake[t, 2]
        rotation = scale[t] * np.array([[math.cos(angle), -math.sin(angle)],
                                        [math.sin(angle), math.cos(angle)]])
        where = centre + scale[t] * (pan * t + shake[t, :2])
        # Output pixel p shows photograph point where + rotation (p - mid).
        shift = where - rotation @ np.full(2, size / 2)
        matrix = np.hstack([rotation, shift[:, None]])
        frames[t] = cv2.warpAffine(photo, matrix, (size, size),
                                   flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT)
    return frames


def _contrasting_colour(rng: np.random.Generator,
                        background: np.ndarray) -> np.ndarray:
    # Redrawn until it stands out from what lies behind it: an actor of the
    # background's colour would make its clip's label unknowable.
    while True:
        colour = rng.integers(0, 256, 3).astype(np.float32)
        if np.abs(colour - background).sum() >= 200:
            return colour


def _polygon(shape: str, centre: np.ndarray, radius: float,
             angle: float) -> np.ndarray:
    corners = {'square': 4, 'triangle': 3}[shape]
    turns = angle + np.arange(corners) * 2 * math.pi / corners
    points = centre + radius * np.stack([np.cos(turns), np.sin(turns)], 1)
    return points.round().astype(np.int32)


def _shape_mask(shape: str, size: int, centre: np.ndarray, radius: float,
                angle: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if shape == 'disc':
        cv2.circle(mask, tuple(centre.round().astype(int)),
                   int(round(radius)), 1, -1)
    else:
        cv2.fillPoly(mask, [_polygon(shape, centre, radius, angle)], 1)
    return mask.astype(bool)


def _paint(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray,
           texture: np.ndarray) -> None:
    frame[mask] = np.clip(colour + texture[mask], 0, 255)


def render_clip_with_mask(rng: np.random.Generator, label: int,
                          num_frames: int, size: int,
                          camera: Camera = Camera()
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """``(num_frames, size, size, 3)`` RGB frames of action ``label`` filmed
    by ``camera``, and the ``(num_frames, size, size)`` mask of the pixels
    the actor covers."""
    if not 0 <= label < len(ACTIONS):
        raise ValueError(f'label must be in [0, {len(ACTIONS) - 1}], got '
                         f'{label}')
    camera.check()
    frames = _camera(rng, PHOTOS[int(rng.integers(len(PHOTOS)))], num_frames,
                     size, camera)
    shapes = ('square', 'disc', 'triangle')

    # Distractors: smaller, no spoke, each on its own straight path.
    distractors = []
    for _ in range(int(rng.integers(3))):
        start = rng.uniform(0.1 * size, 0.9 * size, 2)
        velocity = rng.normal(0, 1, 2)
        velocity *= rng.uniform(0, 0.25) * size / num_frames / max(
            np.linalg.norm(velocity), 1e-6)
        distractors.append((shapes[int(rng.integers(3))], start, velocity,
                            size * rng.uniform(0.06, 0.1),
                            rng.uniform(0, 2 * math.pi),
                            rng.integers(0, 256, 3).astype(np.float32)))

    shape = shapes[int(rng.integers(3))]
    radius = size * rng.uniform(0.18, 0.24)
    centre = np.array([size / 2, size / 2]) + rng.uniform(-size / 10,
                                                          size / 10, 2)
    around = frames[0, int(centre[1]) - 8:int(centre[1]) + 8,
                    int(centre[0]) - 8:int(centre[0]) + 8].mean((0, 1))
    colour = _contrasting_colour(rng, around)
    spoke = (0, 0, 0) if colour.sum() > 3 * 255 / 2 else (255, 255, 255)
    # A fixed surface texture that moves with the actor (it is an object,
    # not a flat sticker).
    texture = cv2.GaussianBlur(rng.normal(0, 18, (size, size, 3)).astype(
        np.float32), (0, 0), 1.)
    heading = np.array(((1, 0), (-1, 0), (0, 1), (0, -1)))[
        label if label < 4 else int(rng.integers(4))]
    speed = size * (0.8 if label == 4 else 0.4) / num_frames
    spin = 1.5 * math.pi / num_frames * rng.choice((-1, 1))  # 3/4 of a turn
    angle0 = rng.uniform(0, 2 * math.pi)

    masks = np.zeros((num_frames, size, size), bool)
    for t in range(num_frames):
        frame = frames[t]
        for kind, start, velocity, r, angle, tint in distractors:
            _paint(frame, _shape_mask(kind, size, start + velocity * t, r,
                                      angle), tint, texture)
        progress = t / max(num_frames - 1, 1)
        position, r, angle, visible = centre.copy(), radius, angle0, True
        if label <= 4:
            position += heading * (t - num_frames / 2) * speed
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
        if not visible:
            continue
        masks[t] = _shape_mask(shape, size, position, r, angle)
        shifted = np.roll(texture, tuple((position - centre).round().astype(
            int))[::-1], (0, 1))
        _paint(frame, masks[t], colour, shifted)
        # A contrasting spoke from the centre to the first corner: a disc
        # shows no turn without it.
        tip = position + r * np.array([math.cos(angle), math.sin(angle)])
        cv2.line(frame, tuple(position.round().astype(int)),
                 tuple(tip.round().astype(int)), spoke, max(2, size // 24))

    frames += rng.normal(0, rng.uniform(2, 6), frames.shape)  # sensor noise
    frames = np.clip(frames, 0, 255).round().astype(np.uint8)
    quality = int(rng.integers(30, 81))
    for t in range(num_frames):
        _, jpeg = cv2.imencode('.jpg', frames[t],
                               (cv2.IMWRITE_JPEG_QUALITY, quality))
        frames[t] = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    return frames, masks


def render_clip(rng: np.random.Generator, label: int, num_frames: int,
                size: int) -> np.ndarray:
    """``(num_frames, size, size, 3)`` RGB frames of action ``label``."""
    return render_clip_with_mask(rng, label, num_frames, size)[0]


def tubelet_mask(masks: np.ndarray, grid: TokenGrid) -> np.ndarray:
    """``(T', H', W')``: True where the actor covers at least ``MIN_COVER``
    of the tubelet, over the frames ``grid`` samples in test mode."""
    frames = grid.frames(len(masks))
    sampled = masks[frames].astype(np.float32)
    t, p = grid.tubelet_size, grid.patch_size
    _, height, width = sampled.shape
    cover = sampled.reshape(len(frames) // t, t, height // p, p, width // p,
                            p).mean((1, 3, 5))
    return cover >= MIN_COVER


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
