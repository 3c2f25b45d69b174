"""The camera that films the synthetic clips' backgrounds: a crop of a real
photograph bundled with scikit-image (astronaut, coffee, chelsea, rocket,
brick, grass, gravel, ...), panned, zoomed, slightly rotated and shaken by a
smoothed random walk: textured everywhere, with the temporal redundancy of
real footage but no frame exactly equal to the last."""
import functools
import math
from typing import NamedTuple

import cv2
import numpy as np

# Photographs bundled in scikit-image's wheel (no download).
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'brick', 'grass',
          'gravel', 'camera', 'coins', 'moon', 'clock')


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


#: Every clip hand-held, with a wider pan, shake and view than ``Camera()``.
HAND_HELD = Camera(still=0., pan=0.25, shake=0.35, zoom=0.15, view_min=120.,
                   view_max=0.75)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data  # only the generator needs scikit-image
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    return np.ascontiguousarray(image[..., :3]).astype(np.float32)


def background_frames(rng: np.random.Generator, name: str, num_frames: int,
                      size: int,
                      camera: Camera = Camera()) -> np.ndarray:
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
