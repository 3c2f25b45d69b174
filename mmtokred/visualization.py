"""Pictures of which patches were merged together or pruned."""
import colorsys
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor


def token_map(source: Tensor, grid: Sequence[int]) -> np.ndarray:
    """``(T', H', W')`` index of the token holding each input tubelet, -1
    where the tubelet was pruned, for one clip's ``(N, N0)`` source map."""
    held = source.sum(0) > 0
    owner = source.float().argmax(0)
    owner = torch.where(held, owner, torch.full_like(owner, -1))
    return owner.reshape(*grid).cpu().numpy()


def _colour(index: int) -> np.ndarray:
    hue = (index * 0.618033988749895) % 1.0  # golden ratio: distinct hues
    return np.array(colorsys.hsv_to_rgb(hue, 0.85, 1.0)) * 255


def overlay(frame: np.ndarray, owners: np.ndarray, sizes: np.ndarray,
            alpha: float = 0.55) -> np.ndarray:
    """Draw one tubelet time step of a token map over ``frame`` (H, W, 3).

    Tubelets of a token that holds several are tinted with that token's
    colour, pruned tubelets are blacked out, single tubelets stay as they
    are.

    Args:
        owners: ``(H', W')`` token index per tubelet (-1 pruned).
        sizes: number of tubelets each token holds, indexed by token.
    """
    height, width = frame.shape[:2]
    rows, cols = owners.shape
    patch_h, patch_w = height // rows, width // cols
    out = frame.astype(np.float32).copy()
    for i in range(rows):
        for j in range(cols):
            cell = out[i * patch_h:(i + 1) * patch_h,
                       j * patch_w:(j + 1) * patch_w]
            owner = owners[i, j]
            if owner < 0:
                cell *= 0.1
            elif sizes[owner] > 1:
                cell[:] = (1 - alpha) * cell + alpha * _colour(owner)
    return out.clip(0, 255).astype(np.uint8)


def render_grid(frames: np.ndarray, maps: Dict[str, np.ndarray],
                tubelet: int) -> np.ndarray:
    """A picture: one row per stage (input, block i, ...), one column per
    tubelet time step, each the step's first frame with the overlay.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB frames the model saw.
        maps: stage name -> ``(T', H', W')`` token map.
    """
    rows = []
    for owners in maps.values():
        sizes = np.bincount(owners[owners >= 0].ravel(),
                            minlength=owners.max() + 1)
        rows.append(
            np.concatenate([
                overlay(frames[t * tubelet], owners[t], sizes)
                for t in range(owners.shape[0])
            ], 1))
    return np.concatenate(rows, 0)


def render_animation(frames: np.ndarray, maps: Dict[str, np.ndarray],
                     tubelet: int) -> List[np.ndarray]:
    """One image per frame: the stages side by side."""
    images = []
    for t in range(frames.shape[0]):
        panels = []
        for owners in maps.values():
            sizes = np.bincount(owners[owners >= 0].ravel(),
                                minlength=owners.max() + 1)
            panels.append(overlay(frames[t], owners[t // tubelet], sizes))
        images.append(np.concatenate(panels, 1))
    return images
