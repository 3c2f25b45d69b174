"""The results the pages give against the CSVs they come from: the
generated tables are what tools/results_tables.py makes of the CSVs, and
the CSVs against the code: every sweep row's token reduction builds on
its model and counts the row's FLOPs, every docs/results.csv row's config
counts its GMACs and tokens, and benchmark.md's rows give its speeds.
"""
import csv
import importlib.util
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from mmengine.config import Config

from conftest import ROOT, run_tool
from mmtokred.measure.flops import ShapeFlops
from test_docs import pages, section, tables

#: The sweep columns the tool and these tests read (CSVs may have more).
SWEEP_COLUMNS = {'model', 'method', 'target', 'gflops', 'flops_ratio',
                 'speedup', 'top1', 'agreement', 'retention', 'branches',
                 'statistic', 'token_reduction'}
#: How far a results row's FLOPs share may be from its proxy point's.
SHARE_TOLERANCE = 0.015


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def results_tables():
    spec = importlib.util.spec_from_file_location(
        'results_tables', ROOT / 'tools' / 'results_tables.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_csvs() -> List[Path]:
    return [p for p in sorted((ROOT / 'docs').glob('*.csv'))
            if p.name != 'results.csv']


def test_generated_tables_are_what_the_csvs_give():
    result = run_tool([sys.executable, 'tools/results_tables.py',
                       '--check'], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    marked = [p.name for p in pages()
              if '<!-- results_tables:' in p.read_text()]
    assert {'README.md', 'results.md', 'proxy_results.md'} <= set(marked)


def test_results_tool_rewrites_a_stale_table_and_applies_the_rule(tmp_path):
    """A table that differs is rewritten; the main table keeps baselines
    and configs >= 1.25x dense within 0.5 top-1, naming the others."""
    tool = results_tables()
    shutil.copy(ROOT / 'docs' / 'proxy_sweep_pretrained.csv', tmp_path)
    rows = read_csv(ROOT / 'docs' / 'results.csv')
    base = dict(rows[0], baseline='no', config='configs/videomae_tome.py',
                proxy_csv='proxy_sweep_pretrained.csv',
                proxy_method='tome:proportional_attention=True')
    rows = [rows[0], dict(base, speed_vs_dense_fp32='1.30',
                          speed_vs_dense_bf16='1.40',
                          proxy_target='0.60'),  # -0.4 / +0.2: in
            dict(base, config='configs/videomae_jmp.py',
                 speed_vs_dense_fp32='1.20', speed_vs_dense_bf16='1.30',
                 proxy_target='0.60'),
            dict(base, config='configs/videomae_ppt.py',
                 speed_vs_dense_fp32='2.00', speed_vs_dense_bf16='1.30',
                 proxy_target='0.35'),
            dict(base, config='configs/videomae_patchsim.py',
                 speed_vs_dense_fp32='2.00', speed_vs_dense_bf16='1.50',
                 proxy_target='0.50'),  # -0.5 / -0.5: within 0.5
            dict(base, config='configs/videomae_nepam_half.py',
                 speed_vs_dense_fp32='2.00', speed_vs_dense_bf16='1.10',
                 proxy_target='0.60')]
    with open(tmp_path / 'results.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    page = tmp_path / 'page.md'
    page.write_text('x\n<!-- results_tables: results results.csv -->\n| a |'
                    '\n<!-- results_tables: end -->\n')
    text = tool.render(page)
    assert text != page.read_text() and '| a |' not in text
    (table, ) = tables(text)
    assert [r[0] for r in table[1:]] == [
        'stock MMAction2', '`videomae_tome.py`', '`videomae_patchsim.py`']
    assert table[2][table[0].index('proxy top-1 change')] == '-0.4 / +0.2'
    assert 'Also: `videomae_jmp.py` (1.20x dense in fp32, under 1.25x); ' \
        '`videomae_ppt.py` (proxy -5.2 / -6.7, under -0.5); ' \
        '`videomae_nepam_half.py` (1.10x dense in bf16, under 1.25x).' \
        in text
    rows[1]['baseline'] = 'maybe'
    with open(tmp_path / 'results.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ValueError, match="baseline must be 'yes' or 'no'"):
        tool.render(page)


def test_every_csv_is_linked_and_has_the_columns_read():
    linked = {name for p in pages()
              for name in re.findall(r'\]\(([\w.]+\.csv)\)', p.read_text())}
    names = [p.name for p in sorted((ROOT / 'docs').glob('*.csv'))]
    assert set(names) <= linked, set(names) - linked
    for path in sweep_csvs():
        with open(path, newline='') as f:
            header = set(next(csv.reader(f)))
        assert SWEEP_COLUMNS <= header, f'{path.name}: lacks ' \
            f'{SWEEP_COLUMNS - header}'


def sweep_config(name: str) -> str:
    """The config the pages that link ``name`` run tools/sweep.py on."""
    configs = {c for p in pages() if f']({name})' in p.read_text()
               for c in re.findall(r'tools/sweep\.py (configs/\S+\.py)',
                                   p.read_text())}
    assert len(configs) == 1, f'{name}: the pages run the sweep on {configs}'
    return configs.pop()


def test_sweep_settings_build_and_count_their_gflops():
    counters: Dict[str, ShapeFlops] = {}
    failures = []
    for path in sweep_csvs():
        config = sweep_config(path.name)
        if config not in counters:
            counters[config] = ShapeFlops(
                Config.fromfile(str(ROOT / config)).model)
        flops = counters[config]
        for row in read_csv(path):
            where = f"{path.name}: {row['method']} {row['target'] or '-'}"
            recorded = float(row['gflops'])
            try:
                reduction = json.loads(row['token_reduction'])
                per_clip = flops.depends_on_clips(reduction)
                counted = None if per_clip else flops.gflops(reduction)
            except (ValueError, TypeError, KeyError) as exc:
                failures.append(f'{where}: does not build: {exc}')
                continue
            if per_clip:  # the mean of its clips' counts: not timed
                if row['speedup'] or not 0 < recorded <= flops.dense:
                    failures.append(f'{where}: a per-clip budget with a '
                                    'speed or past dense')
            elif not math.isclose(counted, recorded, rel_tol=1e-9):
                failures.append(f'{where}: counts {counted}, the row says '
                                f'{recorded}')
            if not math.isclose(float(row['flops_ratio']),
                                recorded / flops.dense, rel_tol=1e-9):
                failures.append(f'{where}: flops_ratio is not gflops / '
                                'dense')
    assert not failures, '\n'.join(failures)


def test_results_rows_count_what_their_config_runs():
    """Each config of docs/results.csv counts the row's GMACs and tokens,
    at the FLOPs share of the proxy point it cites."""
    rows = read_csv(ROOT / 'docs' / 'results.csv')
    assert rows[0]['config'] == 'stock'
    dense = ShapeFlops(Config.fromfile(str(ROOT / rows[1]['config'])).model)
    assert rows[0]['gmacs'] == f'{dense.dense:.1f}'
    failures = []
    for row in rows[1:]:
        cfg = Config.fromfile(str(ROOT / row['config']))
        reduction = cfg.model.backbone.get('token_reduction')
        counted = ShapeFlops(cfg.model).gflops(reduction)
        where = row['config']
        if f'{counted:.1f}' != row['gmacs']:
            failures.append(f'{where}: {counted:.1f} GMACs, the row says '
                            f"{row['gmacs']}")
        tokens = plan_tokens(cfg, reduction)
        if tokens != row['tokens']:
            failures.append(f"{where}: tokens {tokens}, the row says "
                            f"{row['tokens']}")
        for name in row['proxy_csv'].split():
            point = [r for r in read_csv(ROOT / 'docs' / name)
                     if r['method'] == row['proxy_method'] and r['target']
                     and math.isclose(float(r['target']),
                                      float(row['proxy_target']))]
            share = counted / dense.dense
            if not point or abs(float(point[0]['flops_ratio']) - share) > \
                    SHARE_TOLERANCE:
                failures.append(f'{where}: {share:.3f} of the FLOPs, its '
                                f"proxy point {row['proxy_method']} "
                                f"{row['proxy_target']} in {name} another "
                                'share')
    assert not failures, '\n'.join(failures)


def plan_tokens(cfg: Config, reduction) -> str:
    """Tokens as results.csv writes them: ``N`` when the blocks keep them,
    ``first -> after the last block`` when they reduce."""
    from mmtokred.reducers.token_reduction import build_token_reduction
    backbone = cfg.model.backbone
    depth = backbone.get('depth', 12)
    grid = (backbone.num_frames // backbone.get('tubelet_size', 2),
            backbone.img_size // backbone.patch_size,
            backbone.img_size // backbone.patch_size)
    # One block more than the model has: its input is the last block's
    # output.
    built = build_token_reduction(reduction, depth + 1)
    tokens = built.plan(grid, depth + 1).tokens
    if built.blocks is None:
        return str(tokens[0])
    return f'{tokens[0]} -> {tokens[-1]}'


def test_benchmark_rows_give_the_measured_results():
    """benchmark.md's row of each measured config gives results.csv's
    GMACs, tokens and fp32 speeds."""
    bench = section((ROOT / 'docs' / 'benchmark.md').read_text(),
                    'Results (ViT-B and the other models, CPU, fp32)')
    bench_rows = {}
    for row in tables(bench)[0][1:]:
        m = re.search(r'`(configs/[\w.-]+\.py)`', row[0])
        if m or row[0].startswith('stock'):
            bench_rows[m.group(1) if m else 'stock'] = ' | '.join(row)
    failures = []
    for row in read_csv(ROOT / 'docs' / 'results.csv'):
        if not row['speed_vs_stock_fp32']:
            continue
        theirs = bench_rows.get(row['config'], '')
        figures = [row['gmacs'], row['tokens'],
                   f"{float(row['speed_vs_stock_fp32']):.2f}x"]
        if row['speed_vs_dense_fp32']:
            figures.append(f"{float(row['speed_vs_dense_fp32']):.2f}x")
        missing = [f for f in figures if f not in theirs]
        if missing:
            failures.append(f"{row['config']}: {missing} not in "
                            f'benchmark.md: {theirs!r}')
    assert not failures, '\n'.join(failures)


CONFIG_CELL = re.compile(r'`(?:configs/)?((?:[\w-]+/)?videomae[\w-]*\.py)`')


def gmacs_cells():
    """``(where, config, cell)`` of the docs tables' rows that name a
    config and have a GMACs column."""
    for page in pages():
        for table in tables(page.read_text()):
            header = table[0]
            columns = [i for i, h in enumerate(header) if 'GMACs' in h]
            for row in table[1:]:
                named = [m.group(1) for c in row
                         for m in [CONFIG_CELL.search(c)] if m]
                if columns and named:
                    yield page.name, named[0], row[columns[0]]


def test_gmacs_in_the_docs_tables_are_their_configs():
    """A table row that names a config counts that config's GMACs (the
    model's after '->'), to the decimals written."""
    counted: Dict[str, float] = {}
    checked, failures = 0, []
    for where, config, cell in gmacs_cells():
        if config not in counted:
            cfg = Config.fromfile(str(ROOT / 'configs' / config))
            counted[config] = ShapeFlops(cfg.model).gflops(
                cfg.model.backbone.get('token_reduction'))
        written = re.findall(r'\d+\.(\d+)', cell.split('->')[-1])[0]
        value = re.findall(r'\d+\.\d+', cell.split('->')[-1])[0]
        if f'{counted[config]:.{len(written)}f}' != value:
            failures.append(f'{where}: {config} counts '
                            f'{counted[config]:.2f} GMACs, the table says '
                            f'{cell}')
        checked += 1
    assert checked >= 8, checked
    assert not failures, '\n'.join(failures)
