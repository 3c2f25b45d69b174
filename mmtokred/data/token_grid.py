"""The ground truth of which tokens matter: where the actor covers at least
``MIN_COVER`` of a tubelet of the model's token grid (the frames that
MMAction2's ``SampleFrames`` takes in test mode, grouped by
``tubelet_size``, cut into ``patch_size`` squares)."""
from typing import List, NamedTuple

import numpy as np

#: Share of a tubelet's pixels the actor must cover to count as actor.
MIN_COVER = 0.1


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
