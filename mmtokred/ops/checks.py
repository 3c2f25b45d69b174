"""Rules for options that both an op and the reducer configuring it take.

Each rule is written once. A reducer applies it at build time under its own
field name (``'JMP threshold'``), so a bad config fails before the first
batch; an op applies it when called directly, under its argument's name.
"""
from typing import Sequence


def check_choice(field: str, value, allowed: Sequence) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f'{field} must be one of {tuple(allowed)}, got '
                         f'{value!r}')


def check_cosine(field: str, value: float) -> None:
    """``value`` is a cosine similarity: a number in [-1, 1]."""
    if not -1 <= value <= 1:
        raise ValueError(f'{field} is a cosine similarity in [-1, 1], got '
                         f'{value}')


def check_window_fits(field: str, window: Sequence[int],
                      grid: Sequence[int]) -> None:
    """A ``(t, h, w)`` window of tubelets must fit the token grid."""
    for name, size, limit in zip(('t', 'h', 'w'), window, grid):
        if not 1 <= size <= limit:
            raise ValueError(
                f'{field} {tuple(window)} does not fit the token grid '
                f'{tuple(grid)}: its {name} must be in [1, {limit}]')
