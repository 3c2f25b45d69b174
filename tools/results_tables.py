"""Writes the results tables of README.md and docs/*.md from their CSVs.

A page marks each generated table with a line naming its kind and the CSVs
it is made from (paths relative to the page), and an end line:

    <!-- results_tables: sweep proxy_sweep.csv -->
    ...
    <!-- results_tables: end -->

Kinds: ``sweep`` (the points of tools/sweep.py CSVs, each figure
``seed 0 / seed 1``), ``results`` (docs/results.csv: the configs that are
at least 1.25x dense on CPU in fp32 (and in bf16 where measured) and within
0.5 top-1 of it on every proxy model, then one line naming the others and
why) and ``results_all`` (every row of docs/results.csv with its note). A
proxy change is read from the sweep point a results row names, never
written twice.

    python tools/results_tables.py            # rewrite the tables
    python tools/results_tables.py --check    # exit 1 if a page differs
"""
import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
Row = Dict[str, str]

BLOCK = re.compile(r'^<!-- results_tables: (\w+) ([^>]*?) -->\n'
                   r'(.*?)^<!-- results_tables: end -->$', re.S | re.M)
#: The main table's rule: speed against dense (fp32, CPU) and top-1 change.
MIN_SPEEDUP = 1.25
MIN_CHANGE = -0.5
RESULTS_COLUMNS = (
    'config', 'baseline', 'gmacs', 'tokens', 'cpu', 'speed_vs_stock_fp32',
    'speed_vs_dense_fp32', 'speed_vs_dense_bf16', 'gpu',
    'gpu_speed_vs_dense', 'peak_memory_vs_stock', 'proxy_csv',
    'proxy_method', 'proxy_target', 'paper', 'note')
SPEEDS = ('speed_vs_stock_fp32', 'speed_vs_dense_fp32', 'speed_vs_dense_bf16',
          'gpu_speed_vs_dense')


def read_csv(path: Path) -> List[Row]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '| ' + ' | '.join('---' for _ in header) + ' |']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


# ------------------------------------------------------------ sweep points

def dense_top1(rows: List[Row]) -> Dict[str, float]:
    """Each model's dense top-1 in a sweep's rows."""
    return {r['model']: float(r['top1']) for r in rows
            if r['method'] == 'dense'}


def changes(points: Dict[str, Row], dense: Dict[str, float]) -> List[float]:
    """Top-1 change against dense (points) of each model, unrounded: the
    rule compares these, the tables print them to one decimal."""
    return [100 * (float(points[m]['top1']) - dense[m])
            for m in sorted(points)]


def seeds(values: Sequence[str]) -> str:
    return ' / '.join(values)


def sweep_table(paths: Sequence[Path]) -> str:
    """One line per (method, target) of the sweeps, in their order: FLOPs,
    then top-1, its change against dense, agreement and actor kept (%)
    of each model, then the branches and PPT's statistic of model 0."""
    points: Dict[Tuple[str, str], Dict[str, Row]] = {}
    dense: Dict[str, float] = {}
    for path in paths:
        rows = read_csv(path)
        dense.update(dense_top1(rows))
        for row in rows:
            points.setdefault((row['method'], row['target']),
                              {})[row['model']] = row
    out = []
    for (method, target), point in points.items():
        models = sorted(point)
        first = point[models[0]]

        def each(cell: Callable[[Row], str]) -> str:
            return seeds([cell(point[m]) for m in models])

        notes = ', '.join(f'{k} {v}'
                          for k, v in json.loads(first['branches']).items())
        statistic = json.loads(first['statistic'])
        if statistic:
            notes += ' (statistic p10/50/90 ' + '/'.join(
                f'{s:.3g}' for s in statistic) + ')'
        out.append([
            method, '-' if target == '' else f'{float(target):.2f}',
            f"{float(first['flops_ratio']):.2f}",
            each(lambda r: f"{100 * float(r['top1']):.1f}"),
            seeds([f'{c:+.1f}' for c in changes(point, dense)]),
            each(lambda r: f"{100 * float(r['agreement']):.1f}"),
            each(lambda r: '-' if r['retention'] == '' else
                 f"{100 * float(r['retention']):.1f}"),
            notes])
    return markdown(('method', 'target', 'FLOPs', 'top-1', 'change',
                     'agreement', 'actor kept', 'branches (model 0)'), out)


# ------------------------------------------------------ docs/results.csv

def check_results(rows: List[Row], path: Path) -> None:
    """Refuse rows of ``path`` with missing or unknown columns, a baseline
    other than yes/no, a speed that is not a positive number."""
    for line, row in enumerate(rows, 2):
        where = f'{path.name}:{line}'
        if None in row or set(row) != set(RESULTS_COLUMNS):
            raise ValueError(f'{where}: the columns must be '
                             f'{", ".join(RESULTS_COLUMNS)}')
        if row['baseline'] not in ('yes', 'no'):
            raise ValueError(f"{where}: baseline must be 'yes' or 'no', "
                             f"got {row['baseline']!r}")
        for name in SPEEDS:
            if row[name] and not float(row[name]) > 0:
                raise ValueError(f'{where}: {name} must be a number > 0, '
                                 f'got {row[name]!r}')


def proxy_changes(row: Row, folder: Path) -> Optional[List[float]]:
    """The top-1 changes of the sweep point ``row`` names, of every model
    of each CSV in ``proxy_csv`` (space-separated), in that order (None
    where it names none)."""
    if not row['proxy_csv']:
        return None
    found = []
    for name in row['proxy_csv'].split():
        rows = read_csv(folder / name)
        point = {r['model']: r for r in rows
                 if r['method'] == row['proxy_method'] and r['target'] != ''
                 and abs(float(r['target'])
                         - float(row['proxy_target'])) < 1e-9}
        if not point:
            raise ValueError(f"{row['config']}: no point "
                             f"{row['proxy_method']} at "
                             f"{row['proxy_target']} in {name}")
        found += changes(point, dense_top1(rows))
    return found


def why_not_main(row: Row, change: Optional[List[float]]) -> List[str]:
    """Why a reduced config is left out of the main table (none: it is
    in)."""
    why = []
    if not row['speed_vs_dense_fp32']:
        why.append('fp32 speed not measured')
    for column, dtype in (('speed_vs_dense_fp32', 'fp32'),
                          ('speed_vs_dense_bf16', 'bf16')):
        if row[column] and float(row[column]) < MIN_SPEEDUP:
            why.append(f'{float(row[column]):.2f}x dense in {dtype}, under '
                       f'{MIN_SPEEDUP}x')
    if change is None:
        why.append('proxy not measured')
    elif min(change) < MIN_CHANGE - 1e-9:  # a change of -0.5 is within
        why.append(f'proxy {seeds([f"{c:+.1f}" for c in change])}, under '
                   f'{MIN_CHANGE}')
    return why


def name(row: Row) -> str:
    config = row['config']
    return 'stock MMAction2' if config == 'stock' else \
        f'`{Path(config).name}`'


def speed(value: str) -> str:
    return f'{float(value):.2f}x' if value else '-'


def results_cells(row: Row, change: Optional[List[float]],
                  columns: Sequence[str]) -> List[str]:
    cells = {
        'config': name(row), 'gmacs': row['gmacs'], 'tokens': row['tokens'],
        'peak_memory_vs_stock': row['peak_memory_vs_stock'] or '-',
        'proxy': '-' if change is None else
        seeds([f'{c:+.1f}' for c in change]),
        'paper': row['paper'] or '-', 'note': row['note'],
        'gpu': row['gpu'] or '-', 'cpu': row['cpu'] or '-'}
    cells.update({s: speed(row[s]) for s in SPEEDS})
    return [cells[c] for c in columns]


HEADERS = {
    'config': 'config (ViT-B)', 'gmacs': 'GMACs', 'tokens': 'tokens',
    'speed_vs_stock_fp32': 'CPU fp32 vs stock',
    'speed_vs_dense_fp32': 'CPU fp32 vs dense',
    'speed_vs_dense_bf16': 'CPU bf16 vs dense',
    'gpu_speed_vs_dense': 'GPU vs dense',
    'peak_memory_vs_stock': 'peak memory vs stock',
    'proxy': 'proxy top-1 change', 'paper': 'paper', 'cpu': 'CPU',
    'gpu': 'GPU', 'note': 'setting'}


def results_table(paths: Sequence[Path], every_row: bool) -> str:
    """docs/results.csv as a table: every row with the machines and notes
    (``every_row``), else the baselines and the configs the main table's
    rule admits, a column of bf16 or GPU speeds only where a reduced config
    has one, and a line naming the others and why."""
    (path, ) = paths
    rows = read_csv(path)
    check_results(rows, path)
    change = [proxy_changes(r, path.parent) for r in rows]
    columns = ['config', 'gmacs', 'tokens', 'speed_vs_stock_fp32',
               'speed_vs_dense_fp32', 'speed_vs_dense_bf16',
               'gpu_speed_vs_dense', 'peak_memory_vs_stock', 'proxy', 'paper']
    if every_row:
        return markdown([HEADERS[c] for c in columns + ['cpu', 'gpu',
                                                        'note']],
                        [results_cells(r, c, columns + ['cpu', 'gpu', 'note'])
                         for r, c in zip(rows, change)])
    reduced = [r for r in rows if r['baseline'] == 'no']
    for optional in ('speed_vs_dense_bf16', 'gpu_speed_vs_dense'):
        if not any(r[optional] for r in reduced):
            columns.remove(optional)
    shown, others = [], []
    for row, c in zip(rows, change):
        why = [] if row['baseline'] == 'yes' else why_not_main(row, c)
        if why:
            others.append(f"{name(row)} ({' and '.join(why)})")
        else:
            shown.append(results_cells(row, c, columns))
    machines = [f"{kind}: {', '.join(sorted(names))}" for kind, names in (
        ('CPU', {r['cpu'] for r in rows if r['cpu']}),
        ('GPU', {r['gpu'] for r in rows if r['gpu']})) if names]
    notes = ['Measured on ' + '; '.join(machines) + '.'] if machines else []
    if others:
        notes.append('Also: ' + '; '.join(others) + '.')
    return '\n\n'.join([markdown([HEADERS[c] for c in columns], shown),
                        *notes])


KINDS = {
    'sweep': sweep_table,
    'results': lambda paths: results_table(paths, every_row=False),
    'results_all': lambda paths: results_table(paths, every_row=True),
}


# ----------------------------------------------------------------- pages

def render(page: Path) -> str:
    """``page`` with every marked table made again from its CSVs."""
    text = page.read_text()

    def table(m: re.Match) -> str:
        kind, files = m.group(1), m.group(2).split()
        if kind not in KINDS:
            raise ValueError(f'{page.name}: unknown table kind {kind!r} '
                             f'(one of {", ".join(KINDS)})')
        body = KINDS[kind]([page.parent / f for f in files])
        return (f'<!-- results_tables: {kind} {m.group(2)} -->\n{body}\n'
                '<!-- results_tables: end -->')

    return BLOCK.sub(table, text)


def pages() -> List[Path]:
    """README.md and docs/*.md: those with a marked table."""
    return [p for p in [ROOT / 'README.md', *sorted(
        (ROOT / 'docs').glob('*.md'))] if BLOCK.search(p.read_text())]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 naming every page whose '
                        'tables differ from what their CSVs give')
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = render(page)
        if text == page.read_text():
            continue
        stale.append(page.relative_to(ROOT))
        if not args.check:
            page.write_text(text)
    verb = 'differ from their CSVs' if args.check else 'rewritten'
    for page in stale:
        print(f'{page}: {verb}')
    if args.check and stale:
        print('run python tools/results_tables.py to write them')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
