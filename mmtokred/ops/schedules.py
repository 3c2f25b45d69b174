"""How many tokens each block removes."""
from typing import List, Sequence, Union

from .checks import check_choice, check_counts

SCHEDULES = ('constant', 'decreasing')


def merge_schedule(r: Union[int, Sequence[int]], depth: int,
                   schedule: str = 'constant', field: str = 'r') -> List[int]:
    """Tokens to remove in each of ``depth`` blocks.

    Args:
        r: a count per block, or an explicit list of ``depth`` counts.
        schedule: with an int ``r``: 'constant' (r in every block) or
            'decreasing' (linearly from 2r at the first block to 0 at the
            last, the same total as constant).
        field: the name ``r`` goes by in error messages.
    """
    if not isinstance(r, (list, tuple)):
        (r, ) = check_counts(field, r)
        check_choice('schedule', schedule, SCHEDULES)
        if schedule == 'constant':
            return [r] * depth
        step = 2 * r / max(depth - 1, 1)
        return [round(2 * r - i * step) for i in range(depth)]
    return check_counts(field, r, depth)
