"""Quiet, honest output: the known upstream warnings filtered (only they),
init_checkpoint in one line, the sweep's speed timed in turns and marked
noisy, the demo writing what the README says."""
import csv
import importlib.util
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_CONFIG, data_options, run_tool

MSDA = 'Fail to import ``MultiScaleDeformableAttention``'
PKG_RESOURCES = 'pkg_resources is deprecated as an API'


def python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, warnings at Python's defaults."""
    return run_tool([sys.executable, '-c', code], env={'PYTHONWARNINGS': ''})


def test_upstream_stack_emits_the_known_warnings():
    """The control: without mmtokred, the pinned stack prints them."""
    if importlib.util.find_spec('pkg_resources') is not None:
        out = python('from mmengine.utils import is_installed; '
                     "is_installed('mmaction')")
        assert PKG_RESOURCES in out.stderr
    if importlib.util.find_spec('mmcv._ext') is None:  # mmcv-lite
        out = python('import mmcv.cnn.bricks.transformer')
        assert MSDA in out.stderr


def test_known_warnings_are_gone_and_others_still_show():
    code = f'''
import warnings
import mmtokred.plugin
from mmengine.config import Config
Config.fromfile({str(TINY_CONFIG)!r})  # an mmaction:: base: pkg_resources
Config.fromfile({str(TINY_CONFIG)!r})  # again: its reload warns again
warnings.warn('an unrelated warning')
# The same modules with another message, the same messages from another
# module: not filtered.
warnings.warn_explicit('another mmcv warning', UserWarning, 'transformer.py',
                       1, module='mmcv.cnn.bricks.transformer')
warnings.warn_explicit({PKG_RESOURCES!r} + ' (from elsewhere)', UserWarning,
                       'elsewhere.py', 1, module='elsewhere')
warnings.warn_explicit({MSDA!r} + ' (from elsewhere)', UserWarning,
                       'elsewhere.py', 2, module='elsewhere')
'''
    err = python(code).stderr
    assert 'an unrelated warning' in err
    assert 'another mmcv warning' in err
    lines = err.splitlines()
    assert [line for line in lines if PKG_RESOURCES in line] == [
        line for line in lines if 'elsewhere.py:1:' in line]
    assert [line for line in lines if MSDA in line] == [
        line for line in lines if 'elsewhere.py:2:' in line]
    assert len([line for line in lines if 'elsewhere.py' in line]) == 2


def test_importing_the_plugin_prints_nothing():
    result = python('import mmtokred.plugin')
    assert result.stdout == '' and result.stderr == ''


def test_init_checkpoint_prints_one_line(tmp_path):
    out = tmp_path / 'sub' / 'tiny.pth'
    result = run_tool([sys.executable, 'tools/init_checkpoint.py',
                       str(TINY_CONFIG), str(out)],
                      env={'PYTHONWARNINGS': ''})
    assert result.stderr == ''
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'wrote {out}: ')
    assert 'seed 0' in lines[0] and out.exists()


def test_init_checkpoint_errors_still_show(tmp_path):
    result = run_tool([sys.executable, 'tools/init_checkpoint.py',
                       'configs/demo/missing.py', str(tmp_path / 'x.pth')],
                      check=False)
    assert result.returncode != 0
    assert 'missing.py' in result.stderr


def test_sweep_timings_take_turns():
    from mmtokred.benchmark.forward import interleaved_times, spread
    calls = []
    forwards = {name: (lambda name=name: calls.append(name))
                for name in ('dense', 'a', 'b')}
    times = interleaved_times(forwards, warmup=1, repeats=3)
    assert calls == ['dense', 'a', 'b'] * 4  # a warm-up turn, three timed
    assert [len(ts) for ts in times.values()] == [3, 3, 3]
    assert spread([1.0, 1.1, 1.3]) == pytest.approx(0.3 / 1.1)
    assert spread([1.0]) is None


def _row(method, speedup, noisy, spread):
    return dict(model=0, method=method, target=None, knob=0., gflops=1.,
                flops_ratio=1., speedup=speedup, top1=0.5, agreement=1.,
                retention=None, branches='{}', statistic='null',
                token_reduction='null', speed_spread=spread, noisy=noisy)


def test_sweep_table_marks_noisy_rows():
    from mmtokred.benchmark.sweep import format_table
    table = format_table([_row('dense', 1., False, 0.05),
                          _row('nepam', 1.5, True, 0.4)])
    lines = table.splitlines()
    assert re.search(r'dense .* 1\.00  ', lines[1])
    assert re.search(r'nepam .* 1\.50\* ', lines[2])
    assert lines[3].startswith('* noisy speed') and '20%' in lines[3]
    assert len(lines) == 4
    one_pass = format_table([_row('dense', 1., None, None)]).splitlines()
    assert re.search(r'1\.00\? ', one_pass[1])
    assert one_pass[2].startswith('? one timed pass')
    # Rows of sweeps that predate the column: no mark, no note.
    old = _row('dense', 1., None, None)
    del old['noisy'], old['speed_spread']
    assert len(format_table([old]).splitlines()) == 2


def test_sweep_writes_spread_and_noisy_columns(video_data, tiny_checkpoint,
                                               tmp_path):
    work = tmp_path / 'sweep'
    result = run_tool([
        sys.executable, 'tools/sweep.py', str(TINY_CONFIG), tiny_checkpoint,
        '--methods', 'nepam', '--flops', '0.7', '--repeats', '3',
        '--work-dir', str(work), '--cfg-options', *data_options(video_data)
    ], env={'PYTHONWARNINGS': ''})
    assert MSDA not in result.stderr and PKG_RESOURCES not in result.stderr
    with open(work / 'sweep.csv', newline='') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    # The columns of before, in their order, then the new ones.
    assert reader.fieldnames == [
        'model', 'method', 'target', 'knob', 'gflops', 'flops_ratio',
        'speedup', 'top1', 'agreement', 'retention', 'branches', 'statistic',
        'token_reduction', 'speed_spread', 'noisy'
    ]
    assert [r['method'] for r in rows] == ['dense', 'nepam']
    assert float(rows[0]['speedup']) == 1.0  # dense is timed once
    for row in json.loads((work / 'sweep.json').read_text()):
        assert row['speed_spread'] >= 0
        assert row['noisy'] == (row['speed_spread'] > 0.2)
        line = [line for line in result.stdout.splitlines()
                if line.startswith(row['method'] + ' ')][0]
        speed = f"{row['speedup']:.2f}" + ('*' if row['noisy'] else ' ')
        assert f' {speed} ' in line
    assert ('* noisy speed' in result.stdout) == any(
        r['noisy'] == 'True' for r in rows)


def test_demo_writes_what_the_readme_says():
    readme = (ROOT / 'README.md').read_text()
    said = re.search(r'writes,\s+in\s+`work_dirs/demo/`:(.*?)\n\n', readme,
                     re.S).group(1)
    demo = (ROOT / 'tools' / 'demo.sh').read_text()
    names = re.findall(r'`([\w.\-/]+)`', said)
    assert 'tokens_nepam.png' in names
    for name in names:  # data/, tiny_random.pth, benchmark_..., ...
        if name.startswith('TIMESTAMP') or name.startswith('.'):
            continue  # written by tools/test.py
        stem = re.sub(r'(/|\.png|\.gif|\.json|\.pth)$', '', name)
        assert stem in demo, name
    assert '--out "$WORK/tokens_nepam"' in demo  # .png and .gif
    assert 'top-5 is 1.0' in demo and '0.25' in demo
