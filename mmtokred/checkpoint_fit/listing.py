"""Names in the messages on a checkpoint: the first few, and how many
more."""
from typing import Sequence

#: Mismatches named in an error.
SHOWN = 5


def listed(names: Sequence[str], shown: int = SHOWN) -> str:
    """The first ``shown`` of ``names``, comma-separated, and how many
    more."""
    more = len(names) - shown
    return ', '.join(names[:shown]) + (f' and {more} more' if more > 0 else
                                       '')
