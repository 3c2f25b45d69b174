"""Table cells the benchmarks' tables share (:mod:`mmtokred.table`)."""
from typing import Callable, List, Optional

from ..table import Row


def format_tokens(tokens: Optional[List[int]]) -> str:
    """Tokens per block as a table cell: one count, or first->last."""
    if not tokens:
        return '-'
    if len(set(tokens)) == 1:
        return str(tokens[0])
    return f'{tokens[0]}->{tokens[-1]}'


def speedup(name: str) -> Callable[[Row], str]:
    """A cell of the speedup ``row[name]``: ``1.23x``, ``-`` where absent
    or None."""
    def cell(row: Row) -> str:
        value = row.get(name)
        return '-' if value is None else f'{value:.2f}x'
    return cell
