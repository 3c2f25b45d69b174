"""How many tokens each block removes."""
from typing import List, Sequence, Union

SCHEDULES = ('constant', 'decreasing')


def merge_schedule(r: Union[int, Sequence[int]], depth: int,
                   schedule: str = 'constant') -> List[int]:
    """Tokens to remove in each of ``depth`` blocks.

    Args:
        r: a count per block, or an explicit list of ``depth`` counts.
        schedule: with an int ``r``: 'constant' (r in every block) or
            'decreasing' (linearly from 2r at the first block to 0 at the
            last, the same total as constant).
    """
    if isinstance(r, bool) or not isinstance(r, (int, list, tuple)):
        raise ValueError(f'r must be an int or a list of ints, got {r!r}')
    if isinstance(r, (list, tuple)):
        if len(r) != depth:
            raise ValueError(f'r lists one count per block: expected {depth} '
                             f'values, got {len(r)}')
        counts = list(r)
    elif schedule == 'constant':
        counts = [r] * depth
    elif schedule == 'decreasing':
        step = 2 * r / max(depth - 1, 1)
        counts = [round(2 * r - i * step) for i in range(depth)]
    else:
        raise ValueError(
            f'schedule must be one of {SCHEDULES}, got {schedule!r}')
    if any(not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError(f'r must be >= 0 in every block, got {counts}')
    return counts
