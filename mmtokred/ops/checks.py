"""Rules for options that both an op and the reducer configuring it take.

Each rule is written once. A reducer applies it at build time under its own
field name (``'JMP threshold'``), so a bad config fails before the first
batch; an op applies it when called directly, under its argument's name.
Every rule names the field, the value and what is allowed.
"""
import math
from numbers import Integral, Real
from typing import Dict, List, Optional, Sequence, Union


def is_int(value) -> bool:
    """An integer that is not a bool (``True`` is not a count)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(field: str, value, low: int = 0,
              high: Optional[int] = None) -> None:
    """``value`` is an integer in ``[low, high]``."""
    allowed = f'[{low}, {"inf" if high is None else high}]'
    if not is_int(value) or value < low or (high is not None
                                            and value > high):
        raise ValueError(f'{field} must be an integer in {allowed}, got '
                         f'{value!r}')


def check_number(field: str, value, low: float = -math.inf,
                 high: float = math.inf, high_open: bool = False,
                 finite: bool = True) -> None:
    """``value`` is a real number in ``[low, high]`` (``[low, high)`` with
    ``high_open``), and finite unless ``finite`` is False."""
    closing = ')' if high_open else ']'
    allowed = (f'a {"finite " if finite else ""}number in [{low}, {high}'
               f'{closing}')
    ok = isinstance(value, Real) and not isinstance(value, bool) and (
        not math.isnan(value)) and (not finite or math.isfinite(value))
    ok = ok and low <= value and (value < high if high_open else
                                  value <= high)
    if not ok:
        raise ValueError(f'{field} must be {allowed}, got {value!r}')


def check_counts(field: str, value: Union[int, Sequence[int]],
                 length: Optional[int] = None) -> List[int]:
    """A count >= 0 or a list of them (``length`` long, if given); returns
    the list, or ``[value]`` for one count."""
    if is_int(value):
        counts = [value]
    elif isinstance(value, (list, tuple)) and all(map(is_int, value)):
        counts = list(value)
        if length is not None and len(counts) != length:
            raise ValueError(f'{field} lists one count per block: expected '
                             f'{length} values, got {len(counts)}')
    else:
        raise ValueError(f'{field} must be an integer >= 0 or a list of '
                         f'them, got {value!r}')
    if any(c < 0 for c in counts):
        raise ValueError(f'{field} must be >= 0 in every block, got {value}')
    return counts


def check_block_counts(name: str, blocks: Sequence[int],
                       r: Union[int, Sequence[int]]) -> Dict[int, int]:
    """Distinct block indices >= 0 and the tokens each removes (one count
    for all, or one per block): ``{block: count}``. ``name`` is the
    reducer's, for the messages."""
    if not isinstance(blocks, (list, tuple)) or not blocks or not all(
            map(is_int, blocks)) or min(blocks) < 0 or len(
                set(blocks)) != len(blocks):
        raise ValueError(f'{name} blocks must be a list of distinct block '
                         f'indices >= 0, got {blocks!r}')
    counts = check_counts(f'{name} r', r, len(blocks))
    if is_int(r):
        counts = counts * len(blocks)
    return dict(zip(blocks, counts))


def check_choice(field: str, value, allowed: Sequence) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f'{field} must be one of {tuple(allowed)}, got '
                         f'{value!r}')


def check_cosine(field: str, value: float) -> None:
    """``value`` is a cosine similarity: a number in [-1, 1]."""
    check_number(field, value, -1, 1)


def check_window_fits(field: str, window: Sequence[int],
                      grid: Sequence[int]) -> None:
    """A ``(t, h, w)`` window of tubelets must fit the token grid."""
    for name, size, limit in zip(('t', 'h', 'w'), window, grid):
        if not 1 <= size <= limit:
            raise ValueError(
                f'{field} {tuple(window)} does not fit the token grid '
                f'{tuple(grid)}: its {name} must be in [1, {limit}]')
