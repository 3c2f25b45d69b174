"""Pictures of which patches were merged together or pruned, labelled."""
import colorsys
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

#: Caption entry: swatches (RGB) drawn before the text.
Entry = Tuple[List[np.ndarray], str]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.45
_LINE = 18  # pixels a line of text takes
_PAD = 6
#: How much darker a pruned tubelet is drawn.
_PRUNED_SHADE = 0.1


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
                cell *= _PRUNED_SHADE
            elif sizes[owner] > 1:
                cell[:] = (1 - alpha) * cell + alpha * _colour(owner)
    return out.clip(0, 255).astype(np.uint8)


def stage_labels(blocks: Sequence[int], depth: int,
                 input_reducer: Optional[str]) -> List[str]:
    """What each row (stage) of the pictures shows: the tokens entering the
    first block (``after NEPAM``, the input reducer's name, or ``input (no
    input reduction)``), then those leaving each of ``blocks`` (0-based, of
    ``depth``), in the order given."""
    first = ('input (no input reduction)' if input_reducer is None else
             f'after {input_reducer}')
    return [first] + [f'after block {b} (of 0-{depth - 1})' for b in blocks]


def token_summary(owners: np.ndarray) -> str:
    """How many tokens a token map holds, how many of them hold several
    tubelets (merged), and how many tubelets no token holds (pruned)."""
    sizes = np.bincount(owners[owners >= 0].ravel())
    summary = (f'{int((sizes > 0).sum())} tokens, '
               f'{int((sizes > 1).sum())} of them merged')
    pruned = int((owners < 0).sum())
    if pruned:
        summary += f", {pruned} tubelet{'s' if pruned > 1 else ''} pruned"
    return summary


def caption(maps: Dict[str, np.ndarray], columns: str) -> List[Entry]:
    """The legend of a picture of ``maps``: what a colour means, what a
    pruned tubelet looks like (where one is drawn), and what ``columns``
    are."""
    entries: List[Entry] = [
        ([_colour(i) for i in (1, 2, 3)],
         'tinted: the tubelets of one merged token (one colour per token, '
         'chosen per stage)'),
        ([], 'untinted: a token holding one tubelet'),
    ]
    if any((owners < 0).any() for owners in maps.values()):
        entries.append(([np.full(3, 255 * _PRUNED_SHADE)],
                        'dark: pruned, held by no token'))
    entries.append(([], columns))
    return entries


def _lines(text: str, width: int) -> List[str]:
    """``text`` wrapped to ``width`` pixels of the font (a longer word
    stands alone)."""
    lines: List[str] = []
    for word in text.split():
        longer = f'{lines[-1]} {word}' if lines else word
        if lines and cv2.getTextSize(longer, _FONT, _FONT_SCALE,
                                     1)[0][0] <= width:
            lines[-1] = longer
        else:
            lines.append(word)
    return lines or ['']


def _band(texts: Sequence[str], width: int) -> np.ndarray:
    """White band of ``width`` with ``texts`` in black, one paragraph
    each, wrapped."""
    lines = [line for text in texts for line in _lines(text, width - 2 * _PAD)]
    band = np.full((len(lines) * _LINE + _PAD, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (_PAD, (i + 1) * _LINE), _FONT, _FONT_SCALE,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return band


def _legend(entries: Sequence[Entry], width: int) -> np.ndarray:
    """The caption under a picture: each entry's swatches, then its
    text."""
    parts = [np.full((0, width, 3), 255, np.uint8)]  # no entries: no band
    for swatches, text in entries:
        side = _LINE - 4
        indent = _PAD + len(swatches) * (side + 2) + (4 if swatches else 0)
        band = _band([text], width - indent + _PAD)
        row = np.full((band.shape[0], width, 3), 255, np.uint8)
        row[:, indent - _PAD:] = band
        for k, colour in enumerate(swatches):
            x = _PAD + k * (side + 2)
            row[5:5 + side, x:x + side] = colour
        parts.append(row)
    return np.concatenate(parts, 0)


def annotate(image: np.ndarray, labels: Sequence[str],
             entries: Sequence[Entry], by: str = 'row',
             notes: Optional[Sequence[str]] = None) -> np.ndarray:
    """``image``, split into ``len(labels)`` equal rows (``by='row'``) or
    columns (``'column'``), with each part's label (and its note, e.g.
    :func:`token_summary`) above it and the caption ``entries`` below."""
    if by not in ('row', 'column'):
        raise ValueError(f"by must be 'row' or 'column', got {by!r}")
    notes = notes or [''] * len(labels)
    axis = 0 if by == 'row' else 1
    parts = np.split(image, len(labels), axis)
    width = parts[0].shape[1]
    heads = [_band([label, note] if note else [label], width)
             for label, note in zip(labels, notes)]
    tallest = max(head.shape[0] for head in heads)
    heads = [np.pad(h, ((0, tallest - h.shape[0]), (0, 0), (0, 0)),
                    constant_values=255) for h in heads]
    labelled = [np.concatenate([head, part], 0)
                for head, part in zip(heads, parts)]
    body = np.concatenate(labelled, axis)
    return np.concatenate([body, _legend(entries, body.shape[1])], 0)


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
