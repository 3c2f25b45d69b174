"""Quiet, honest output: the known upstream warnings filtered (only they),
tools/test.py and train.py saying what runs while their log files keep
everything, init_checkpoint in one line, the sweep's speed timed in turns and
marked noisy, the demo writing what the README says."""
import csv
import importlib.util
import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_CONFIG, data_options, run_tool

MSDA = 'Fail to import ``MultiScaleDeformableAttention``'
PKG_RESOURCES = 'pkg_resources is deprecated as an API'
FILE_CLIENT = '"FileClient" will be deprecated in future'
HARD_DISK = '"HardDiskBackend" is the alias of "LocalBackend"'
NEPAM_CONFIG = ROOT / 'configs' / 'demo' / 'videomae_tiny_nepam.py'
#: What mmengine's Runner logs that the console of the tools leaves out.
RUNNER_BLOCKS = ('System environment:', 'Runtime environment:', 'Config:',
                 'Hooks will be executed in the following order:')


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


def test_upstream_stack_logs_the_file_client_notices():
    """The control: mmaction's video readers build mmengine's FileClient,
    which logs two deprecation notices (to stdout, through MMLogger)."""
    out = python('from mmengine.fileio import FileClient; '
                 "FileClient('disk')")
    assert FILE_CLIENT in out.stdout and HARD_DISK in out.stdout


def test_file_client_notices_are_gone_and_others_still_show():
    code = f'''
import logging
import mmtokred.plugin
from mmengine.fileio import FileClient, file_client
from mmengine.logging import print_log
FileClient('disk')
# Another message of that module; those messages from another module.
file_client.print_log('another file_client notice', logger='current',
                      level=logging.WARNING)
print_log({FILE_CLIENT!r} + ' (from elsewhere)', logger='current',
          level=logging.WARNING)
print_log({HARD_DISK!r} + ' (from elsewhere)', logger='current',
          level=logging.WARNING)
'''
    out = python(code).stdout
    assert 'another file_client notice' in out
    lines = out.splitlines()
    assert [line for line in lines if FILE_CLIENT in line or HARD_DISK in
            line] == [line for line in lines if '(from elsewhere)' in line]
    assert len([line for line in lines if '(from elsewhere)' in line]) == 2


def run_test_tool(video_data, checkpoint, work_dir, *extra):
    return run_tool([
        sys.executable, 'tools/test.py', str(NEPAM_CONFIG), checkpoint,
        '--work-dir', str(work_dir), *extra, '--cfg-options',
        *data_options(video_data)
    ], env={'PYTHONWARNINGS': ''})


def the_log(work_dir) -> str:
    logs = list(work_dir.glob('*/*.log'))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def test_test_tool_says_what_runs_and_logs_everything(video_data,
                                                      tiny_checkpoint,
                                                      tmp_path):
    result = run_test_tool(video_data, tiny_checkpoint, tmp_path)
    output = result.stdout + result.stderr
    lines = output.splitlines()
    assert len(lines) < 40, output
    said = '\n'.join(lines)
    assert ('model: Recognizer3D, backbone TokenReductionVisionTransformer '
            '(img_size 64, patch_size 16, embed_dims 96, depth 4') in said
    assert f'checkpoint {tiny_checkpoint}' in said
    assert 'token reduction: input NEPAM(window=(2, 2, 2), ratio=0.5)' in said
    assert f"data: 5 clips of {video_data['ann_file']}" in said
    assert re.search(r'Epoch\(test\) \[5/5\] +acc/top1: [\d.]+  acc/top5',
                     said)
    for block in RUNNER_BLOCKS:
        assert block not in said
    for notice in (FILE_CLIENT, HARD_DISK, MSDA, PKG_RESOURCES):
        assert notice not in said
    # The log file has all of it: environment, config, hooks, and the
    # lines of the console.
    log = the_log(tmp_path)
    assert 'full log (environment, config, hooks): ' in said
    assert str(next(tmp_path.glob('*/*.log'))) in said
    for block in RUNNER_BLOCKS:
        assert block in log
    assert "token_reduction=dict(" in log and 'GPU number: 1' in log
    assert "type='NEPAM'" in log and '(BELOW_NORMAL) LoggerHook' in log
    for line in lines:
        if ' - mmengine - ' in line:  # not the checkpoint loader's print
            assert line.split(' - mmengine - ')[1] in log
    if not torch.cuda.is_available():  # the config says what is used
        assert "dist_cfg=dict(backend='gloo')" in log
        assert "backend='nccl'" not in log and "'backend': 'nccl'" not in log


def test_test_tool_verbose_prints_everything(video_data, tiny_checkpoint,
                                             tmp_path):
    result = run_test_tool(video_data, tiny_checkpoint, tmp_path,
                           '--verbose')
    output = result.stdout + result.stderr
    for block in RUNNER_BLOCKS:
        assert block in output
    assert 'token reduction: input NEPAM' in output
    assert 'Epoch(test) [5/5]' in output
    assert len(output.splitlines()) > 200
    assert FILE_CLIENT not in output and HARD_DISK not in output


def test_console_filter_keeps_warnings_and_the_file_complete(tmp_path,
                                                             capsys):
    import logging

    from mmengine.logging import MMLogger

    from mmtokred.console import quiet_console
    log_file = tmp_path / 'run.log'
    logger = MMLogger.get_instance('quiet_console_test',
                                   log_file=str(log_file))
    quiet_console(logger)
    quiet_console(logger)  # idempotent: one filter
    logger.info('Config:\nmodel = dict()')
    logger.info('Hooks will be executed in the following order:\n...')
    logger.warning('Config:\na warning that begins like the config')
    logger.info('Epoch(test) [1/1]  acc/top1: 1.0000')
    logger.error('an error')
    for handler in logger.handlers:
        handler.flush()
    console = capsys.readouterr().out
    assert 'model = dict()' not in console and 'Hooks will' not in console
    assert 'a warning that begins like the config' in console
    assert 'Epoch(test) [1/1]' in console and 'an error' in console
    written = log_file.read_text()
    for message in ('model = dict()', 'Hooks will', 'a warning that begins',
                    'Epoch(test) [1/1]', 'an error'):
        assert message in written
    assert sum(len(h.filters) for h in logger.handlers
               if not isinstance(h, logging.FileHandler)) == 2  # + mmengine's


def test_train_tool_says_what_runs(tmp_path):
    from mmtokred.data import write_action_dataset
    paths = write_action_dataset(str(tmp_path / 'actions'),
                                 dict(train=1, val=1, test=1))
    options = []
    for split in ('train', 'val'):
        options += [f'{split}_dataloader.dataset.ann_file={paths[split]}',
                    f"{split}_dataloader.dataset.data_prefix.video="
                    f"{paths['videos']}",
                    f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False',
                    f'{split}_dataloader.batch_size=5']
    work = tmp_path / 'train'
    result = run_tool([
        sys.executable, 'tools/train.py',
        str(ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'),
        '--work-dir', str(work), '--cfg-options', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1', *options
    ], env={'PYTHONWARNINGS': ''})
    output = result.stdout + result.stderr
    assert len(output.splitlines()) < 40, output
    assert 'no checkpoint (weights as initialised)' in output
    assert 'token reduction: none (dense' in output
    assert f"train data: 10 clips of {paths['train']}" in output
    assert f"val data: 10 clips of {paths['val']}" in output
    assert 'Epoch(train) [1][2/2]' in output
    assert 'Epoch(val) [1][2/2]' in output
    for block in RUNNER_BLOCKS:
        assert block not in output
    log = the_log(work)
    for block in RUNNER_BLOCKS:
        assert block in log


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
    from mmtokred.measure.forward import interleaved_times, spread
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
    from mmtokred.experiments.sweep_table import format_sweep as format_table
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
