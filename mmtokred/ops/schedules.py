"""How many tokens each block removes."""
import math
from typing import List, NamedTuple, Sequence, Union

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


class TokenPlan(NamedTuple):
    """Token counts a reduction gives inputs of one grid, from shapes only."""
    tokens: List[int]  #: tokens entering each block
    caps: List[str]  #: one line per block whose budget exceeds its capacity

    def describe_caps(self, shown: int = 3) -> str:
        """The first ``shown`` caps, and how many more there are."""
        more = len(self.caps) - shown
        return '; '.join(self.caps[:shown]) + (
            f'; and {more} more blocks' if more > 0 else '')


def plan_tokens(input_reducer, block_reducer, grid: Sequence[int],
                depth: int, prefix: int = 0) -> TokenPlan:
    """What the reducers do to inputs of the token ``grid`` in ``depth``
    blocks (an upper bound where the input stage adapts).

    Args:
        input_reducer: None, or has ``tokens_out(grid)``.
        block_reducer: None, or has ``requested(block)`` and
            ``removal(block, tokens)`` (the budget capped at what a block of
            ``tokens`` can remove).
        prefix: tokens before the grid's (a class token, ...), counted in
            what every block sees.
    """
    n = prefix + (math.prod(grid) if input_reducer is None else
                  input_reducer.tokens_out(grid))
    tokens: List[int] = []
    caps: List[str] = []
    for index in range(depth):
        tokens.append(n)
        if block_reducer is None:
            continue
        wanted = block_reducer.requested(index)
        removed = block_reducer.removal(index, n)
        if removed < wanted:
            caps.append(f'block {index} sees {n} tokens and can remove '
                        f'{removed}, not {wanted}')
        n -= removed
    return TokenPlan(tokens, caps)
