"""tools/test.py, tools/dist_test.sh and the video writer, end to end."""
import json
import os
import re
import subprocess
import sys

import decord
import pytest
import torch
from conftest import (TIMM_UNAVAILABLE, TINY_CONFIG, data_options,
                      run_tool, test_metrics)
from mmaction.registry import DATASETS

from mmtokred.data import write_video_dataset


def test_generated_videos_are_deterministic_and_readable(tmp_path):
    _, ann_a = write_video_dataset(str(tmp_path / 'a'), num_videos=3)
    _, ann_b = write_video_dataset(str(tmp_path / 'b'), num_videos=3)
    assert ann_a.read_text() == ann_b.read_text() == \
        'clip_00000.mp4 0\nclip_00001.mp4 1\nclip_00002.mp4 2\n'
    frames_a = decord.VideoReader(str(tmp_path / 'a/videos/clip_00001.mp4'))
    frames_b = decord.VideoReader(str(tmp_path / 'b/videos/clip_00001.mp4'))
    assert len(frames_a) == 32 and frames_a[0].shape == (64, 64, 3)
    assert (frames_a[5].asnumpy() == frames_b[5].asnumpy()).all()
    dataset = DATASETS.build(
        dict(type='VideoDataset', ann_file=str(ann_a),
             data_prefix=dict(video=str(tmp_path / 'a/videos')),
             pipeline=[]))
    assert len(dataset) == 3 and dataset[2]['label'] == 2


def test_bad_generator_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match='num_videos'):
        write_video_dataset(str(tmp_path), num_videos=0)


def run_test_tool(video_data, work_dir, *extra, output=None):
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG), *extra,
        '--work-dir', str(work_dir), '--cfg-options', *data_options(video_data)
    ])
    if output is not None:
        output.append(result.stdout + result.stderr)
    return test_metrics(result.stdout + result.stderr)


def test_test_tool_single_process(video_data, tiny_checkpoint, tmp_path):
    output = []
    metrics = run_test_tool(video_data, tmp_path, tiny_checkpoint,
                            output=output)
    assert set(metrics) >= {'acc/top1', 'acc/top5', 'acc/mean1'}
    assert 0 <= metrics['acc/top1'] <= 1
    # The summary says how much of the model the checkpoint filled.
    assert f'checkpoint {tiny_checkpoint} (59 of 59 tensors of ' \
        'Recognizer3D loaded)' in output[0]


@pytest.mark.slow
def test_dist_test_matches_single_process(video_data, tiny_checkpoint,
                                          tmp_path):
    single = run_test_tool(video_data, tmp_path / 'one', tiny_checkpoint)
    result = run_tool([
        'bash', 'tools/dist_test.sh', str(TINY_CONFIG), tiny_checkpoint, '2',
        '--work-dir', str(tmp_path / 'two'), '--cfg-options',
        *data_options(video_data)
    ], env={'PORT': '29517'})
    output = result.stdout + result.stderr
    assert 'distributed: 2 processes, backend gloo' in output
    assert test_metrics(output) == single


def test_torchrun_runs_on_the_cpu_when_gpus_are_too_few(tmp_path):
    from conftest import ROOT
    # A stand-in python on PATH: it reports one GPU when asked and shows
    # what torch.distributed.run would be started with.
    python = tmp_path / 'python'
    python.write_text('#!/usr/bin/env bash\n'
                      'if [ "$1" = -c ]; then echo 1; exit; fi\n'
                      'echo "CUDA_VISIBLE_DEVICES=[${CUDA_VISIBLE_DEVICES-'
                      'unset}] $*"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != 'CUDA_VISIBLE_DEVICES'}
    env['PATH'] = f"{tmp_path}{os.pathsep}{env['PATH']}"

    def torchrun(procs: str) -> subprocess.CompletedProcess:
        return subprocess.run(['bash', 'tools/torchrun.sh', procs,
                               'tools/test.py'], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)

    two = torchrun('2')
    assert 'CUDA_VISIBLE_DEVICES=[] -m torch.distributed.run' in two.stdout
    assert '--nproc_per_node=2' in two.stdout
    assert '2 processes but 1 GPU(s) visible: running them on the CPU ' \
        'over gloo' in two.stderr
    one = torchrun('1')
    assert 'CUDA_VISIBLE_DEVICES=[unset]' in one.stdout and not one.stderr


def test_a_launch_with_fewer_gpus_than_processes_is_refused(monkeypatch):
    from mmengine.config import Config

    from mmtokred import upstream_fixes
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    with pytest.raises(RuntimeError, match='2 processes per node but 1 '
                       'GPU.*tools/dist_test.sh'):
        upstream_fixes.prepare_cpu_distributed(Config(dict(
            launcher='pytorch')))
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    cfg = Config(dict(launcher='pytorch'))
    upstream_fixes.prepare_cpu_distributed(cfg)  # one GPU each: mmengine's
    assert 'model_wrapper_cfg' not in cfg


def test_amp_runs(video_data, tiny_checkpoint, tmp_path):
    metrics = run_test_tool(video_data, tmp_path, tiny_checkpoint, '--amp')
    assert 0 <= metrics['acc/top1'] <= 1


def test_dump_writes_predictions(video_data, tiny_checkpoint, tmp_path):
    dump = tmp_path / 'preds.pkl'
    run_test_tool(video_data, tmp_path, tiny_checkpoint, '--dump', str(dump))
    assert dump.stat().st_size > 0


def test_missing_checkpoint_is_explained(video_data, tmp_path):
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG), '--work-dir',
        str(tmp_path)
    ], check=False)
    assert result.returncode != 0
    assert 'no checkpoint' in result.stderr


def test_checkpoint_defaults_to_load_from(video_data, tiny_checkpoint,
                                          tmp_path):
    metrics = run_test_tool(video_data, tmp_path, '--cfg-options',
                            f'load_from={tiny_checkpoint}')
    assert 'acc/top1' in metrics


def test_unreachable_url_names_it_and_the_way_out(video_data, tmp_path):
    url = 'http://127.0.0.1:9/videomae.pth'  # nothing listens on port 9
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG), url, '--work-dir',
        str(tmp_path), '--cfg-options', *data_options(video_data)
    ], check=False)
    assert result.returncode != 0
    assert url in result.stderr and 'pass the local file' in result.stderr


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_the_tiny_model():
    """tools/gpu_check.py as ../shared/device runs it, on the tiny model on
    CPU (--tiny, a dry run): every part prints and none fails."""
    done = run_tool([sys.executable, 'tools/gpu_check.py', '--device', 'cpu',
                     '--tiny', '--batch-size', '4', '--repeats', '1',
                     '--dtype', 'fp32'])
    out = done.stdout
    for part in ('versions', 'side by side with stock', 'threshold batches',
                 'host waits a forward pass'):
        assert part in out
    assert 'at most 5 waits a forward pass' in out
    # 1 after NEPAM, 1 a block
    assert re.search(r'^per_clip +5 +- *$', out, re.M), out
    assert re.search(r'^varlen +- +- +does not run: it runs FlashAttention',
                     out, re.M), out
    assert out.rstrip().splitlines()[-1].startswith(
        'gpu_check: 0 part(s) failed')
    refused = run_tool([sys.executable, 'tools/gpu_check.py', '--device',
                        'cuda:7'], check=False)
    assert refused.returncode == 2 and '--device cuda:7' in refused.stderr


@pytest.mark.slow
def test_benchmark_tool_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool([
        sys.executable, 'tools/benchmark.py', str(TINY_CONFIG), '--repeats',
        '2', '--json', str(out)
    ])
    figures = json.loads(out.read_text())
    for key in ('speedup_vs_stock', 'flops_ratio_vs_stock',
                'peak_mem_ratio_vs_stock', 'speedup_vs_dense'):
        assert figures[key] > 0
    assert set(figures['models']) == {'stock', 'ours'}
    ours, stock = figures['models']['ours'], figures['models']['stock']
    # Same architecture: same FLOPs, attention included, and same outputs.
    assert ours['gflops_per_clip'] == pytest.approx(stock['gflops_per_clip'])
    assert figures['max_abs_diff_dense_vs_stock'] <= 1e-4
    assert ours['tokens_per_block'] == [64] * 4
    assert ours['activation_mib'] > 0 and ours['total_mib'] > 0
    assert 'speedup' in result.stdout


@pytest.mark.slow
def test_benchmark_of_a_reduced_config_reports_the_reduction(tmp_path):
    out = tmp_path / 'bench.json'
    config = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    run_tool([
        sys.executable, 'tools/benchmark.py', str(config), '--repeats', '2',
        '--json', str(out)
    ])
    figures = json.loads(out.read_text())
    assert set(figures['models']) == {'stock', 'dense', 'ours'}
    assert figures['models']['ours']['tokens_per_block'] == [36] * 4
    assert figures['flops_ratio_vs_stock'] < 0.7
    assert 0 < figures['reduction_overhead'] < 1
    assert figures['models']['ours']['branch_counts'] == {}


@pytest.mark.slow
def test_benchmark_in_bf16_reports_the_peak(tmp_path):
    out = tmp_path / 'bench.json'
    config = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    result = run_tool([
        sys.executable, 'tools/benchmark.py', str(config), '--repeats', '1',
        '--dtype', 'bf16', '--stock-fp32', '--json', str(out)
    ])
    figures = json.loads(out.read_text())
    assert figures['dtype'] == 'bf16' and not figures['compile']
    assert figures['stock_fp32'] and 'stock: fp32' in result.stdout
    assert figures['models']['ours']['tokens_per_block'] == [36] * 4
    for model in figures['models'].values():
        assert model['gflops_per_s'] > 0
    # dense in bf16 against stock in fp32: the same model, rounded.
    assert figures['max_abs_diff_dense_vs_stock'] < 0.1
    # The limit, measured here for each dtype that ran, beside the nominal.
    assert set(figures['limits']) == {'fp32', 'bf16'}
    for name, limit in figures['limits'].items():
        assert limit['achievable']['gflops'] > 0
        assert f'{name} limit: achievable' in result.stdout
        if limit['nominal'] is not None:  # Linux with /proc/cpuinfo
            assert limit['nominal']['gflops'] > 0
            assert 'nominal' in result.stdout
    for name, model in figures['models'].items():
        assert model['math_dtype'] == ('fp32' if name == 'stock' else 'bf16')
        assert model['share_of_achievable'] > 0
    # Which attention kernel ran, and both kernels at the dense shape.
    attention = figures['attention']
    assert attention['kernel'] in ('fused', 'blocked')
    assert set(attention['ms']) == {'fused', 'blocked'}
    assert f"attention kernel: {attention['kernel']}" in result.stdout
    refused = run_tool([sys.executable, 'tools/benchmark.py', str(config),
                        '--amp', '--dtype', 'bf16'], check=False)
    assert refused.returncode != 0 and 'amp' in refused.stderr


@pytest.mark.slow
def test_benchmark_runs_several_configs_side_by_side(tmp_path):
    out = tmp_path / 'bench.json'
    nepam = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    result = run_tool([
        sys.executable, 'tools/benchmark.py', str(nepam), str(TINY_CONFIG),
        '--repeats', '1', '--dtype', 'bf16', '--attention', 'fused',
        '--json', str(out)
    ])
    figures = json.loads(out.read_text())
    assert list(figures['models']) == ['stock', 'dense',
                                       'videomae_tiny_nepam',
                                       'videomae_tiny_dense']
    assert figures['attention']['kernel'] == 'fused'
    assert 'set by' in figures['attention']['reason']
    reduced = figures['models']['videomae_tiny_nepam']
    assert reduced['tokens_per_block'] == [36] * 4
    assert reduced['flops_ratio_vs_dense'] < 0.7
    assert reduced['bound_share'] == pytest.approx(
        reduced['speedup_vs_dense'] * reduced['flops_ratio_vs_dense'])
    assert 0 < reduced['reduction_overhead'] < 1
    assert figures['models']['videomae_tiny_dense']['tokens_per_block'] == \
        [64] * 4
    assert 'speedup_vs_stock' not in figures  # per model with several
    for name in figures['models']:
        if name != 'stock':
            assert f'{name} vs stock: speedup' in result.stdout
    other = tmp_path / 'other.py'
    other.write_text(f"_base_ = '{TINY_CONFIG}'\n"
                     'model = dict(backbone=dict(depth=2))\n')
    refused = run_tool([sys.executable, 'tools/benchmark.py', str(nepam),
                        str(other)], check=False)
    assert refused.returncode != 0
    assert 'other builds another model than videomae_tiny_nepam' in \
        refused.stderr


def test_batching_benchmark_times_packed_padded_and_single_clips():
    from mmtokred.benchmark.threshold import compare_batching, format_batching
    config = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    result = compare_batching(str(config), mean_tokens=0.5, batch_size=4,
                              repeats=1)
    tokens = result['tokens_per_clip']
    assert tokens == sorted(tokens) and tokens[0] < tokens[-1]
    assert result['mean_token_share'] <= 0.5
    assert result['padded_length'] == max(tokens)
    assert result['max_abs_diff_packed'] < 1e-4
    assert result['max_abs_diff_padded'] < 1e-4
    ways = result['ways']
    # Packed spends each clip's FLOPs, as one clip at a time does: less than
    # padding (whose longest clip here keeps nearly every token, and whose
    # padding bias widens attention by a channel) and than dense.
    assert ways['packed']['gmacs_per_clip'] == pytest.approx(
        ways['clip_by_clip']['gmacs_per_clip'], rel=1e-6)
    assert ways['packed']['gmacs_per_clip'] < min(
        ways['padded']['gmacs_per_clip'], ways['dense']['gmacs_per_clip'])
    assert result['packed_vs_padded'] > 0 and result['packed_kernel']
    table = format_batching(result)
    for way in ('dense', 'packed', 'padded', 'clip_by_clip'):
        assert way in table


@pytest.mark.parametrize('flags, precision', [
    (['--dtype', 'bf16'], 'in bf16:'), (['--amp'], 'in amp (bf16):')])
def test_batching_benchmark_times_half_precision(flags, precision):
    """The precision users run on GPUs, timed packed (was refused)."""
    nepam = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    done = run_tool([sys.executable, 'tools/benchmark.py', str(nepam),
                     '--batching', '--batch-size', '3', '--repeats', '1',
                     *flags])
    assert precision in done.stdout
    assert 'one packed attention call at these lengths: per_clip' in \
        done.stdout


def test_benchmark_batching_mode_refuses_what_it_does_not_run():
    nepam = TINY_CONFIG.parent / 'videomae_tiny_nepam.py'
    for flags in (['--amp', '--dtype', 'bf16'], ['--compile'],
                  ['--threshold', '0.5', '--mean-tokens', '0.5']):
        refused = run_tool([sys.executable, 'tools/benchmark.py', str(nepam),
                            '--batching', *flags], check=False)
        assert refused.returncode == 2, refused.stderr
    refused = run_tool([sys.executable, 'tools/benchmark.py', str(nepam),
                        '--mean-tokens', '0.5'], check=False)
    assert 'options of --batching' in refused.stderr
    with pytest.raises(ValueError, match='no NEPAM input stage'):
        from mmtokred.benchmark.threshold import compare_batching
        compare_batching(str(TINY_CONFIG), batch_size=2, repeats=1)


class FakeClock:
    """Stands in for time.perf_counter: each forward advances it by the
    next of its own durations."""

    def __init__(self, durations):
        self.now = 0.
        self.durations = {name: iter(ds) for name, ds in durations.items()}

    def __call__(self):
        return self.now

    def forward(self, name, calls):
        def run():
            calls.append(name)
            self.now += next(self.durations[name])
        return run


def test_side_by_side_takes_turns_after_warm_up(monkeypatch):
    from mmtokred.measure import forward as forward_module
    from mmtokred.measure.side_by_side import side_by_side
    clock = FakeClock({'stock': [9., 9., 2., 2., 4.],
                       'ours': [9., 9., 1., 2., 1.]})
    monkeypatch.setattr(forward_module.time, 'perf_counter', clock)
    calls = []
    run = side_by_side({name: clock.forward(name, calls)
                        for name in ('stock', 'ours')}, warmup=2, repeats=3)
    assert calls == ['stock', 'ours'] * 5  # warm-up turns, then timed turns
    assert run.seconds == {'stock': [2., 2., 4.], 'ours': [1., 2., 1.]}
    assert run.figures('stock') == dict(seconds_per_turn=[2., 2., 4.],
                                        seconds_per_batch=2., spread=1.)
    assert run.spread('ours') == pytest.approx(1.)
    assert run.speedup('ours', 'stock') == 2.  # medians 2 and 1
    assert run.speedup_range('ours', 'stock') == (1., 4.)  # paired turns
    assert run.peaks == {}


def test_side_by_side_measures_memory_through_the_probe():
    from mmtokred.measure.side_by_side import format_ratio, side_by_side

    class Probe:
        def peaks(self, forwards, device):
            self.seen = list(forwards), device
            return {name: dict(activation_mib=mib, total_mib=10 * mib)
                    for name, mib in zip(forwards, (4., 1.))}

    probe = Probe()
    run = side_by_side({'stock': lambda: None, 'ours': lambda: None},
                       warmup=0, repeats=1, memory=probe)
    assert probe.seen == (['stock', 'ours'], torch.device('cpu'))
    assert run.figures('ours')['activation_mib'] == 1.
    assert run.figures('ours')['spread'] is None  # one turn: unknown
    assert run.memory_ratio('ours', 'stock') == 0.25
    assert run.memory_ratio('ours', 'stock', 'total_mib') == 0.25
    # A reference whose activations needed no new memory (the tiny model
    # in bf16): no ratio, '?' in the tables (was a ZeroDivisionError).
    run.peaks['stock']['activation_mib'] = 0.
    assert run.memory_ratio('ours', 'stock') is None
    assert format_ratio(None) == '?' and format_ratio(0.25) == '0.250'
    with pytest.raises(ValueError, match='repeats must be >= 1'):
        side_by_side({'stock': lambda: None}, warmup=0, repeats=0)


def test_benchmark_refuses_a_device_torch_cannot_reach():
    # Refused before any model is built, naming the option and the way out
    # (torch's own AssertionError comes at the first .to('cuda')).
    device = 'cuda:99' if torch.cuda.is_available() else 'cuda'
    refused = run_tool([sys.executable, 'tools/benchmark.py',
                        str(TINY_CONFIG), '--device', device], check=False)
    assert refused.returncode == 2, refused.stderr
    assert f'error: --device {device}: ' in refused.stderr
    assert 'Traceback' not in refused.stderr
    if not torch.cuda.is_available() and torch.version.cuda is None:
        assert (f'this torch ({torch.__version__}) has no CUDA; install the '
                'CUDA build of torch or use --device cpu') in refused.stderr


def test_device_check_names_each_way_out(monkeypatch):
    from mmtokred.measure.forward import check_device
    assert check_device('cpu') == torch.device('cpu')
    for name, message in (('foo', 'not a device; use cpu, cuda or cuda:N'),
                          ('meta', 'the benchmarks run on cpu or cuda')):
        with pytest.raises(ValueError, match=f'^--device {name}: {message}'):
            check_device(name, '--device')
    monkeypatch.setattr(torch.version, 'cuda', None)
    with pytest.raises(ValueError, match='has no CUDA; install the CUDA '
                       'build of torch or use device cpu'):
        check_device('cuda')
    # A CUDA build of torch on a machine without a visible GPU.
    monkeypatch.setattr(torch.version, 'cuda', '12.4')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match='has CUDA 12.4 but sees no GPU: '
                       'check the driver and CUDA_VISIBLE_DEVICES'):
        check_device('cuda', '--device')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert check_device('cuda:1') == torch.device('cuda:1')
    with pytest.raises(ValueError, match='2 GPU.s. visible: use cuda:0 to '
                       'cuda:1'):
        check_device('cuda:2')


def test_benchmark_refuses_a_clip_length_the_model_was_not_built_for():
    # The issue's command: stock MMAction2's position embedding would fail
    # with a RuntimeError deep in its forward pass.
    refused = run_tool([sys.executable, 'tools/benchmark.py',
                        'configs/videomae_nepam.py', '--shape', '8', '224',
                        '224'], check=False)
    assert refused.returncode == 2, refused.stderr
    assert ("error: --shape 8 224 224: configs/videomae_nepam.py's model was "
            'built for clips of 16 x 224 x 224 (model.backbone.num_frames=16, '
            'img_size=224); its position embedding fits T=16 frames only. '
            'Use --shape 16 224 224 or build the model for 8 frames with '
            '--cfg-options model.backbone.num_frames=8') in refused.stderr


def test_clip_shape_check_allows_what_the_embedding_serves():
    from mmengine.config import Config

    from mmtokred.benchmark.video import check_clip_shape
    backbone = Config.fromfile(TINY_CONFIG).model.backbone  # 8 x 64 x 64
    for shape in ((8, 64, 64), (8, 96, 48)):  # H, W: interpolated
        check_clip_shape(backbone, shape, 'tiny')
    with pytest.raises(ValueError, match=r'^input_shape 8 70 48: .* H and W '
                       r'must be positive multiples of patch_size=16 .*\. Use '
                       'input_shape 8 64 64 or input_shape 8 64 48$'):
        check_clip_shape(backbone, (8, 70, 48), 'tiny')
    with pytest.raises(ValueError, match=r'\. Use input_shape 8 64 64$'):
        check_clip_shape(backbone, (8, 60, 64), 'tiny')
    with pytest.raises(ValueError, match=r'num_frames=T \(a multiple of '
                       r'tubelet_size=2\)$'):
        check_clip_shape(backbone, (5, 64, 64), 'tiny')


@pytest.mark.slow
def test_benchmark_says_what_compiling_takes():
    # TORCH_COMPILE_DISABLE: torch.compile runs eagerly (here and in the
    # memory probe's processes), so the lines are checked in seconds.
    result = run_tool([sys.executable, 'tools/benchmark.py',
                       str(TINY_CONFIG), '--compile', '--repeats', '1'],
                      env={'TORCH_COMPILE_DISABLE': '1'})
    lines = result.stdout.splitlines()
    assert lines[0] == ('compiling 2 models with torch.compile (the first '
                        'pass takes up to a minute per model, less from the '
                        'compile cache of an earlier run)...')
    assert re.fullmatch(r'compiled in \d+ s', lines[1]), lines[1]
    assert 'compile=True' in lines[2]


@pytest.mark.skipif(TIMM_UNAVAILABLE is None, reason='timm imports here: '
                    'the real backbone is built (tests/test_timm_backbone.py)')
def test_timm_backbone_without_timm_names_the_extra():
    from mmaction.registry import MODELS
    from mmengine.config import Config

    from conftest import ROOT
    cfg = Config.fromfile(ROOT / 'configs' / 'tsn_timm_vit-base_nepam.py')
    with pytest.raises(ImportError, match=r'TimmTokenReductionViT needs timm '
                       r'and torchvision, .*: install the timm extra, pip '
                       r'install -e "\.\[timm\]", with a torch build that '
                       'has torchvision'):
        MODELS.build(cfg.model)
