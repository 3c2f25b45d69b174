"""A sweep's rows written and read back (CSV and JSON), and as text: the
table of points and the histograms of the FLOPs each clip spent."""
import csv
import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..table import Column, format_table
from .costs import NOISY_SPREAD

#: The CSV's columns, in order: the keys of a row of :func:`~.sweep.sweep`
#: but ``JSON_ONLY``.
COLUMNS = ('model', 'method', 'target', 'knob', 'gflops', 'flops_ratio',
           'speedup', 'top1', 'agreement', 'retention', 'branches',
           'statistic', 'token_reduction', 'speed_spread', 'noisy')
#: Row keys written to the JSON only: each clip's FLOPs ratio (of points
#: whose tokens depend on the clip; None elsewhere), too long for a cell.
JSON_ONLY = ('clip_flops', )
#: How the typed columns read back (the others, JSON text, stay strings);
#: an empty cell is None.
_TYPES: Dict[str, Callable[[str], object]] = {
    'model': int, 'target': float, 'knob': float, 'gflops': float,
    'flops_ratio': float, 'speedup': float, 'top1': float,
    'agreement': float, 'retention': float, 'speed_spread': float,
    'noisy': lambda cell: cell == 'True'}
#: The speed's mark: noisy, one timed pass (spread unknown), steady.
_MARKS = {True: '*', None: '?', False: ' '}


def write_table(rows: List[Dict], out_prefix: str) -> None:
    """``out_prefix``.csv (the ``COLUMNS``) and .json (every key)."""
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    with open(f'{out_prefix}.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS,
                                extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    with open(f'{out_prefix}.json', 'w') as f:
        json.dump(rows, f, indent=2)


def read_table(path: str) -> List[Dict]:
    """The rows of a sweep's CSV (:func:`write_table`), typed as
    :func:`~.sweep.sweep` returns them, e.g. to plot a sweep again."""
    with open(path, newline='') as f:
        return [{key: (None if cell == '' else _TYPES[key](cell))
                 if key in _TYPES else cell for key, cell in row.items()}
                for row in csv.DictReader(f)]


def _mark(row: Dict) -> str:
    """The speed's mark (none for rows without a ``noisy`` column: CSVs
    written before it, or without a speed)."""
    if row['speedup'] is None or 'noisy' not in row:
        return ' '
    return _MARKS[row['noisy']]


def _notes(row: Dict) -> str:
    """The branches taken and PPT's statistic (10/50/90th percentiles)."""
    notes = ' '.join(f'{k}={v}'
                     for k, v in json.loads(row['branches']).items())
    statistic = json.loads(row['statistic'])
    if statistic:
        notes += ' statistic p10/50/90=' + '/'.join(
            f'{s:.3g}' for s in statistic)
    return notes


def _per_model(show: Callable[[Dict], str]) -> Callable[[Dict], str]:
    """A point's cell: ``show`` of each model's row, ``a / b / ...``."""
    return lambda point: ' / '.join(show(r) for r in point['models'])


def _columns(dense: Dict[int, float]) -> List[Column]:
    """The table's columns; a point is its ``first`` row (model 0) and the
    rows of its ``models``; ``dense`` is each model's dense top-1."""
    return [
        Column('method', lambda p: p['first']['method'], 'left'),
        Column('target', lambda p: '-' if p['first']['target'] is None
               else f"{p['first']['target']:.2f}"),
        Column('FLOPs', lambda p: f"{p['first']['flops_ratio']:.2f}"),
        Column('speed', lambda p: (
            '-' if p['first']['speedup'] is None else
            f"{p['first']['speedup']:.2f}") + _mark(p['first'])),
        Column('top-1', _per_model(lambda r: f"{100 * r['top1']:.1f}")),
        Column('change', _per_model(
            lambda r: f"{100 * (r['top1'] - dense[r['model']]):+.1f}")),
        Column('agree', _per_model(lambda r: f"{100 * r['agreement']:.1f}")),
        Column('retained', _per_model(
            lambda r: '-' if r['retention'] is None else
            f"{100 * r['retention']:.1f}")),
        Column('notes', lambda p: _notes(p['first']), 'left'),
    ]


def _points(rows: List[Dict]) -> List[Dict]:
    """One entry per (method, target), in order: its rows by model."""
    by_point: Dict[Tuple, Dict[int, Dict]] = {}
    for row in rows:
        by_point.setdefault((row['method'], row['target']),
                            {})[row['model']] = row
    first = min(r['model'] for r in rows)
    return [dict(first=point[first],
                 models=[point[m] for m in sorted(point)])
            for point in by_point.values()]


def format_sweep(rows: List[Dict]) -> str:
    """One line per point: FLOPs and speed against dense (``*``: noisy,
    ``?``: one timed pass, spread unknown), then top-1, its change against
    dense, agreement and retention (%), each as ``model 0 / model 1 /
    ...``, then the branches and PPT's statistic of model 0; a note under
    the table says what the marks mean where there are any."""
    dense = {r['model']: r['top1'] for r in rows if r['method'] == 'dense'}
    points = _points(rows)
    shown = {_mark(p['first']) for p in points}
    notes = []
    if '*' in shown:
        notes.append(f'* noisy speed: the timed passes spread by more than '
                     f'{100 * NOISY_SPREAD:.0f}% of their median (column '
                     'speed_spread; a noisy dense row makes every speedup '
                     'uncertain); time with more --repeats on a quieter '
                     'machine')
    if '?' in shown:
        notes.append('? one timed pass (--repeats 1): its spread, and so '
                     'whether it is noisy, is unknown')
    return format_table(_columns(dense), points, rule='', notes=notes)


def flops_histogram(ratios: Sequence[float], width: float = 0.05,
                    bar: int = 40) -> str:
    """A markdown table (for the docs' pages) of how many clips spent each
    FLOPs ratio (of dense), in bins of ``width``, with a bar of ``#``
    scaled to the fullest bin."""
    values = torch.as_tensor(list(ratios), dtype=torch.float64)
    if not len(values):
        raise ValueError('no FLOPs ratios to draw')
    # The small offset keeps a ratio on a bin's edge in that bin.
    bins = (values / width + 1e-9).floor().long()
    first = int(bins.min())
    counts = torch.bincount(bins - first).tolist()
    most = max(counts)
    lines = ['| FLOPs of dense | clips | |', '| --- | --- | --- |']
    for index, count in enumerate(counts, first):
        lines.append(f'| {index * width:.2f}-{(index + 1) * width:.2f} | '
                     f"{count} | {'#' * round(bar * count / most)} |")
    return '\n'.join(lines)


def format_histograms(rows: List[Dict]) -> str:
    """:func:`flops_histogram` of every point with ``clip_flops`` (its
    tokens depend on the clip), headed by its method and model; '' where
    there is none."""
    parts = []
    for row in rows:
        if row.get('clip_flops'):
            ratios = row['clip_flops']
            parts.append(
                f"{row['method']}, model {row['model']}: {len(ratios)} "
                f"clips, mean FLOPs {np.mean(ratios):.3f} of dense, top-1 "
                f"{100 * row['top1']:.1f}\n" + flops_histogram(ratios))
    return '\n\n'.join(parts)
