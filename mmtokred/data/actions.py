"""Clips of one actor (square, disc or triangle with a contrasting spoke)
doing one action over a photograph filmed by :mod:`.camera`:

    0 moves right   1 moves left   2 moves down   3 moves up
    4 moves fast (any of the four ways, twice the speed)
    5 turns (either way)   6 grows   7 shrinks   8 appears   9 disappears

0-2 distractor objects (smaller, no spoke, slower than the actor) move on
their own random paths; sensor noise, then JPEG compression at a random
quality per clip, follow.

Turning either way is one class: a small proxy model stays at chance between
clockwise and anticlockwise, and a class the dense model can only guess says
nothing about what token reduction keeps.
"""
import math
from typing import Tuple

import cv2
import numpy as np

from .camera import PHOTOS, Camera, background_frames

ACTIONS = ('moves right', 'moves left', 'moves down', 'moves up',
           'moves fast', 'turns', 'grows', 'shrinks', 'appears', 'disappears')


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
    frames = background_frames(rng, PHOTOS[int(rng.integers(len(PHOTOS)))],
                               num_frames, size, camera)
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
