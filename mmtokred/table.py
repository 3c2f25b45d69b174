"""Text tables from a list of columns: every table the tools print.

A :class:`Column` names its header and says how a row becomes its cell;
:func:`format_table` sizes each column to its widest cell, so headers and
rows never drift apart.

    >>> print(format_table([Column('model', lambda r: r['name'], 'left'),
    ...                     Column('ms', lambda r: f"{r['ms']:.1f}")],
    ...                    [dict(name='dense', ms=12.345)]))
    model    ms
    -----------
    dense  12.3
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

Row = Dict[str, Any]


@dataclass(frozen=True)
class Column:
    """One column: its ``header``, the ``cell`` text of a row, aligned
    ``'right'`` (numbers) or ``'left'`` (names), at least ``width`` wide."""
    header: str
    cell: Callable[[Row], str]
    align: str = 'right'
    width: int = 0

    def __post_init__(self) -> None:
        if self.align not in ('left', 'right'):
            raise ValueError(f"Column {self.header!r}: align must be 'left' "
                             f"or 'right', got {self.align!r}")


def key(name: str, spec: str = '', missing: str = '-',
        scale: float = 1.) -> Callable[[Row], str]:
    """A cell that formats ``row[name] * scale`` with ``spec``; ``missing``
    where the value is absent or None."""
    def cell(row: Row) -> str:
        value = row.get(name)
        if value is None:
            return missing
        return format(value * scale if scale != 1. else value, spec)
    return cell


def format_table(columns: Sequence[Column], rows: Sequence[Row],
                 rule: str = '-', title: Optional[str] = None,
                 notes: Sequence[str] = ()) -> str:
    """``title``, the header, a rule, one line per row and the ``notes``."""
    cells: List[List[str]] = [[column.cell(row) for column in columns]
                              for row in rows]
    widths = [max([len(column.header), column.width]
                  + [len(line[i]) for line in cells])
              for i, column in enumerate(columns)]

    def line(texts: Sequence[str]) -> str:
        return '  '.join(
            f'{text:<{width}}' if column.align == 'left' else
            f'{text:>{width}}'
            for column, text, width in zip(columns, texts, widths)).rstrip()

    header = line([column.header for column in columns])
    lines = [] if title is None else [title]
    lines += [header] + ([rule * len(header)] if rule else [])
    lines += [line(texts) for texts in cells]
    return '\n'.join(lines + list(notes))


__all__ = ['Column', 'Row', 'format_table', 'key']
