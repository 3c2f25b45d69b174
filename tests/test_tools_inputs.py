"""Bad command-line input refused naming the flag (issue 31): the numbers of
tools/benchmark.py, tools/test.py's --dump, a test config to
tools/train.py, the config tools/sweep.py --histogram does not need;
and an unknown spread (one timed pass) printed ``?`` in every table."""
import json
import sys

import pytest

from conftest import TINY_CONFIG, load_tool, run_tool

NEPAM_CONFIG = str(TINY_CONFIG.parent / 'videomae_tiny_nepam.py')
tool = load_tool


def refusal(call, monkeypatch, capsys, name: str, *args: str) -> str:
    """What ``call()`` says on stderr when it exits with argparse's usage
    error, run as ``tools/NAME.py ARGS``."""
    monkeypatch.setattr(sys, 'argv', [f'tools/{name}.py', *args])
    with pytest.raises(SystemExit) as exit_:
        call()
    assert exit_.value.code == 2
    return capsys.readouterr().err


# --------------------------------------------------------- tools/benchmark.py

@pytest.mark.parametrize('flags, says', [
    (['--batch-size', '0'], 'argument --batch-size: 0 is not an integer >= 1'),
    (['--batch-size', '-2', '--batching'],
     'argument --batch-size: -2 is not an integer >= 1'),
    (['--batch-size', '0', '--engines', 'torch'],
     'argument --batch-size: 0 is not an integer >= 1'),
    (['--batch-size', '1', '--batching'],
     '--batch-size 1: --batching times a batch'),
    (['--repeats', '0'], 'argument --repeats: 0 is not an integer >= 1'),
    (['--repeats', '-1', '--engines', 'torch'],
     'argument --repeats: -1 is not an integer >= 1'),
    (['--warmup', '-1'], 'argument --warmup: -1 is not an integer >= 0'),
    (['--warmup', '0', '--compile'],
     '--warmup 0: --compile needs --warmup 1 or more'),
    (['--batching', '--mean-tokens', '0'],
     'argument --mean-tokens: 0 is not a number in (0, 1]'),
    (['--batching', '--mean-tokens', '1.5'],
     'argument --mean-tokens: 1.5 is not a number in (0, 1]'),
    (['--batching', '--mean-tokens', 'nan'],
     'argument --mean-tokens: nan is not a number in (0, 1]'),
    (['--batching', '--threshold', 'inf'],
     'argument --threshold: inf is not a finite number'),
    (['--batching', '--threshold', '-1'],
     '--threshold -1: NEPAM threshold (for l1 distances) must be'),
])
def test_benchmark_refuses_bad_numbers_naming_the_flag(
        flags, says, monkeypatch, capsys):
    # Before: --batch-size 0 ran 1 clip (16 with --batching), --repeats 0
    # and --mean-tokens 0 failed deep inside with a traceback.
    benchmark = tool('benchmark')
    err = refusal(benchmark.parse_args, monkeypatch, capsys, 'benchmark',
                  NEPAM_CONFIG, *flags)
    assert says in err, err


def test_benchmark_takes_the_numbers_it_runs(monkeypatch):
    benchmark = tool('benchmark')
    for flags, batch in ((['--batch-size', '2', '--batching'], 2),
                         (['--repeats', '1', '--warmup', '0'], None),
                         (['--batching', '--threshold', '0.2'], None)):
        monkeypatch.setattr(sys, 'argv', ['tools/benchmark.py', NEPAM_CONFIG,
                                          *flags])
        assert benchmark.parse_args().batch_size == batch


def test_benchmark_command_line_names_the_flag():
    refused = run_tool([sys.executable, 'tools/benchmark.py', NEPAM_CONFIG,
                        '--batching', '--batch-size', '0'], check=False)
    assert refused.returncode == 2
    assert 'argument --batch-size: 0 is not an integer >= 1' in \
        refused.stderr


# ------------------------------------------------------------- the spread

def test_one_turn_has_an_unknown_spread(monkeypatch):
    from mmtokred.measure.side_by_side import format_spread, side_by_side
    run = side_by_side({'dense': lambda: None}, warmup=0, repeats=1)
    assert run.spread('dense') is None
    assert run.figures('dense')['spread'] is None  # JSON: null
    assert format_spread(None) == '?'
    assert format_spread(0., turns=1) == '?'
    assert format_spread(0.1234, turns=3) == '12.3%'
    assert format_spread(0., turns=2) == '0.0%'


def _compare_result(repeats: int, spread: float) -> dict:
    """What :func:`mmtokred.benchmark.compare.compare` returns, made up."""
    model = dict(math_dtype='fp32', clips_per_s=2., spread=spread,
                 seconds_per_turn=[0.5] * repeats, gflops_per_clip=1.,
                 speedup_vs_stock=1., gflops_per_s=4.,
                 share_of_achievable=0.1, activation_mib=10.,
                 peak_mem_ratio_vs_stock=1., total_mib=20.,
                 tokens_per_block=[64] * 4, flops_ratio_vs_stock=1.,
                 total_mem_ratio_vs_stock=1.)
    return dict(configs=['c.py'], device='cpu', input_shape=[1, 1, 3, 8, 64,
                                                             64],
                dtype='fp32', amp=False, compile=False, repeats=repeats,
                models=dict(stock=dict(model), ours=dict(model)),
                attention=dict(reason='fused'), limits={},
                max_abs_diff_dense_vs_stock=0.)


def _engines_result(repeats: int, spread: float) -> dict:
    row = dict(model='dense', engine='torch', dtype='fp32',
               precision='fp32', seconds_per_batch=0.5, spread=spread,
               gflops_per_clip=1., speedup_vs_fastest_dense=1.,
               speedup_vs_stock_torch=None,
               vs_torch=dict(max_abs=0., finite=True),
               tokens_per_block=[64] * 4)
    return dict(configs=['c.py'], device='cpu', input_shape=[1, 3, 8, 64,
                                                             64],
                engines=['torch'], versions={'torch': '2'}, dtypes=['fp32'],
                rows=[row], skipped=[], repeats=repeats,
                linear=dict(reason='aten'))


def _batching_result(spread) -> dict:
    ways = {way: dict(seconds=0.5, spread=spread, clips_per_s=2.,
                      gmacs_per_clip=1.)
            for way in ('dense', 'packed', 'padded', 'clip_by_clip')}
    return dict(config='c.py', device='cpu', precision='fp32', batch_size=2,
                threshold=0.5,
                tokens_per_clip=[10, 20], mean_token_share=0.3,
                padded_length=20, ways=ways, packed_vs_dense=1.,
                packed_vs_padded=1., packed_vs_clip_by_clip=1.,
                packed_kernel='per_clip', packed_kernel_ms={},
                max_abs_diff_packed=0., max_abs_diff_padded=0.)


def test_tables_print_an_unknown_spread_as_a_question_mark():
    # Before: '0.0%' after one timed pass in tools/benchmark.py's tables,
    # where the sweep prints '?'.
    from mmtokred.benchmark.compare import format_table
    from mmtokred.benchmark.engines import format_engines
    from mmtokred.benchmark.threshold import format_batching
    one = format_table(_compare_result(1, 0.))
    rows = [line for line in one.splitlines()
            if line.startswith(('stock', 'ours'))][:2]
    assert all(row.split()[3] == '?' for row in rows), one
    assert '?: one repeat, unknown' in one
    three = format_table(_compare_result(3, 0.25))
    rows = [line for line in three.splitlines()
            if line.startswith(('stock', 'ours'))][:2]
    assert all(row.split()[3] == '25.0%' for row in rows), three
    assert '?: one repeat' not in three

    one = format_engines(_engines_result(1, 0.))
    row = next(line for line in one.splitlines() if line.startswith('dense'))
    assert row.split()[4] == '?', one
    assert '?: one turn, unknown' in one
    row = next(line for line in format_engines(_engines_result(
        2, 0.05)).splitlines() if line.startswith('dense'))
    assert row.split()[4] == '5.0%'

    one = format_batching(_batching_result(None))
    for way in ('dense', 'packed', 'padded', 'clip_by_clip'):
        row = next(line for line in one.splitlines()
                   if line.startswith(way + ' '))
        assert row.split()[2] == '?', one
    assert '?: one repeat, unknown' in one
    row = next(line for line in format_batching(_batching_result(
        0.1)).splitlines() if line.startswith('dense'))
    assert row.split()[2] == '10.0%'


# ------------------------------------------------------------ tools/sweep.py

def test_sweep_histogram_needs_no_config(tmp_path, monkeypatch, capsys):
    # Before: "the following arguments are required: config".
    sweep = tool('sweep')
    path = tmp_path / 'sweep.json'
    path.write_text(json.dumps([dict(method='nepam_threshold', model=0,
                                     top1=0.5, clip_flops=[0.4, 0.6])]))
    monkeypatch.setattr(sys, 'argv', ['tools/sweep.py', '--histogram',
                                      str(path)])
    sweep.main()
    out = capsys.readouterr().out
    assert 'nepam_threshold, model 0: 2 clips' in out
    assert '| FLOPs of dense | clips | |' in out
    # A config before it, as the docs write it, still goes.
    monkeypatch.setattr(sys, 'argv', ['tools/sweep.py', str(TINY_CONFIG),
                                      '--histogram', str(path)])
    sweep.main()
    assert 'nepam_threshold, model 0: 2 clips' in capsys.readouterr().out


def test_sweep_says_when_it_needs_the_config(tmp_path, monkeypatch, capsys):
    sweep = tool('sweep')
    assert 'give CONFIG and at least one CHECKPOINT (only --histogram goes ' \
        'without a config)' in refusal(sweep.main, monkeypatch, capsys,
                                       'sweep')
    assert '--replot needs CONFIG (its name titles the plot)' in refusal(
        sweep.main, monkeypatch, capsys, 'sweep', '--replot', 'x.csv')
    assert 'give at least one checkpoint' in refusal(
        sweep.main, monkeypatch, capsys, 'sweep', str(TINY_CONFIG))
    missing = str(tmp_path / 'none.json')
    assert f"--histogram {missing}: not a sweep's JSON" in refusal(
        sweep.main, monkeypatch, capsys, 'sweep', '--histogram', missing)


# ----------------------------------------------- tools/test.py, tools/train.py

def test_test_tool_refuses_a_dump_file_that_is_no_pickle(monkeypatch,
                                                         capsys):
    says = refusal(tool('test').parse_args, monkeypatch, capsys, 'test',
                   str(TINY_CONFIG), '--dump', 'out.txt')
    assert '--dump must name a .pkl file, got out.txt' in says


def test_train_tool_refuses_a_config_that_does_not_train(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', str(TINY_CONFIG)])
    with pytest.raises(SystemExit, match='videomae_tiny_dense.py does not '
                       'train: it has no train_dataloader, train_cfg, '
                       'optim_wrapper'):
        tool('train').main()
