"""The fp32 CPU matrix-product path (mmtokred.ops.linear) and its use in
the backbone and the benchmark's limits."""
import importlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmaction.registry import MODELS
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmtokred.measure.flops import count_gflops
from mmtokred.measure.peak import achievable_rate, limit_lines
from mmtokred.ops.linear import (CPU_LINEAR_ENV, CPU_LINEARS, MACHINE,
                                 MachineReport, auto_cpu_linear, cpu_linear,
                                 cpu_linear_reason, cpu_linear_set_to,
                                 cpu_linear_setting, linear, linear_module,
                                 linear_path, probe_machine, set_cpu_linear)

# mmtokred.ops exports the function ``linear``, which hides the module.
linear_ops = importlib.import_module('mmtokred.ops.linear')

needs_onednn = pytest.mark.skipif(
    not MACHINE.onednn, reason='torch has no oneDNN here')

SMALL = dict(img_size=64, patch_size=16, embed_dims=48, depth=2, num_heads=4,
             num_frames=4, tubelet_size=2)


def operands(shape, bias=True, contiguous=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape[:-1], 2 * shape[-1] if not contiguous
                    else shape[-1], generator=generator)
    if not contiguous:  # every other channel: strided rows
        x = x[..., ::2]
    weight = torch.randn(24, shape[-1], generator=generator)
    b = torch.randn(24, generator=generator) if bias else None
    return x, weight, b


def close(got, expected):
    """Equal within fp32 rounding: relative 1e-5 of the output scale."""
    scale = expected.abs().max().clamp_min(1e-12)
    return got.shape == expected.shape and bool(
        (got - expected).abs().max() <= 1e-5 * scale)


@pytest.mark.parametrize('path', ['aten', 'onednn'])
@pytest.mark.parametrize('shape', [(7, 16), (2, 5, 16), (2, 3, 4, 16),
                                   (16,)])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('contiguous', [True, False])
def test_paths_equal_f_linear(path, shape, bias, contiguous):
    if path == 'onednn' and not MACHINE.onednn:
        pytest.skip('torch has no oneDNN here')
    x, weight, b = operands(shape, bias, contiguous)
    assert x.is_contiguous() == contiguous
    with cpu_linear_set_to(path), torch.inference_mode():
        assert linear_path(x, weight, b) == path
        got = linear(x, weight, b)
    assert close(got, F.linear(x, weight, b))


def test_aten_path_is_f_linear_bit_for_bit():
    x, weight, b = operands((3, 50, 16))
    with cpu_linear_set_to('aten'), torch.no_grad():
        assert torch.equal(linear(x, weight, b), F.linear(x, weight, b))


@needs_onednn
def test_strided_weight_or_bias_take_aten():
    # The oneDNN op reads the bias as it lies in memory: a strided one would
    # give wrong sums, so such operands go to F.linear.
    x, weight, _ = operands((5, 16))
    strided_bias = torch.randn(48)[::2]
    strided_weight = torch.randn(16, 24).t()
    with cpu_linear_set_to('onednn'), torch.no_grad():
        assert linear_path(x, weight, strided_bias) == 'aten'
        assert linear_path(x, strided_weight) == 'aten'
        assert close(linear(x, weight, strided_bias),
                     F.linear(x, weight, strided_bias))


@needs_onednn
def test_other_dtypes_and_mixed_operands_take_aten():
    x, weight, b = operands((5, 16))
    with cpu_linear_set_to('onednn'), torch.no_grad():
        for dtype in (torch.bfloat16, torch.float16, torch.float64):
            assert linear_path(x.to(dtype), weight.to(dtype),
                               b.to(dtype)) == 'aten'
        assert linear_path(x, weight.bfloat16()) == 'aten'
        assert linear_path(x, weight, b.double()) == 'aten'


def report(vendor='AuthenticAMD', blas='mkl', avx512=True, onednn=True):
    return MachineReport(vendor=vendor, blas=blas, avx512=avx512,
                         onednn=onednn)


@pytest.mark.parametrize('machine, expected', [
    (report(), 'onednn'),
    (report(vendor='HygonGenuine'), 'onednn'),
    (report(vendor='GenuineIntel'), 'aten'),
    (report(vendor=''), 'aten'),
    (report(onednn=False), 'aten'),
    (report(blas='open'), 'aten'),
    (report(avx512=False), 'aten'),
])
def test_auto_choice_by_machine(machine, expected):
    path, why = auto_cpu_linear(machine)
    assert path == expected
    assert why


@pytest.mark.parametrize('vendor, flags, blas, onednn, expected', [
    ('AuthenticAMD', 'fma avx2 avx512f avx512bw', 'mkl', True, 'onednn'),
    ('GenuineIntel', 'fma avx2 avx512f avx512bw', 'mkl', True, 'aten'),
    ('AuthenticAMD', 'fma avx2 avx512f', 'mkl', False, 'aten'),
    ('AuthenticAMD', 'fma avx2 avx512f', 'open', True, 'aten'),
])
def test_auto_choice_from_faked_probe(monkeypatch, vendor, flags, blas,
                                      onednn, expected):
    monkeypatch.setattr(linear_ops, '_cpuinfo', lambda: (vendor, flags))
    monkeypatch.setattr(linear_ops, '_blas', lambda: blas)
    monkeypatch.setattr(linear_ops, '_has_onednn_linear', lambda: onednn)
    machine = probe_machine()
    assert machine == report(vendor, blas, 'avx512f' in flags, onednn)
    assert auto_cpu_linear(machine)[0] == expected


def test_probe_reads_this_machine():
    assert MACHINE == probe_machine()
    assert MACHINE.onednn == torch.backends.mkldnn.is_available()
    if torch.backends.mkl.is_available():
        assert MACHINE.blas == 'mkl'


@needs_onednn
def test_auto_follows_the_machine(monkeypatch):
    with cpu_linear_set_to('auto'):
        for machine in (report(), report(vendor='GenuineIntel')):
            monkeypatch.setattr(linear_ops, 'AUTO_CPU_LINEAR',
                                auto_cpu_linear(machine))
            path = auto_cpu_linear(machine)[0]
            assert cpu_linear() == path
            assert cpu_linear_reason().startswith(f'{path} (auto: ')
            x, weight, b = operands((5, 16))
            with torch.no_grad():
                assert linear_path(x, weight, b) == path


@needs_onednn
def test_grad_falls_back_to_aten():
    x, weight, b = operands((2, 5, 16))
    weight = nn.Parameter(weight)
    x.requires_grad_(True)
    with cpu_linear_set_to('onednn'):
        assert linear_path(x, weight, b) == 'aten'
        linear(x, weight, b).square().sum().backward()
        with torch.no_grad():
            assert linear_path(x, weight, b) == 'onednn'
    expected_x, expected_w = torch.autograd.grad(
        F.linear(x, weight, b).square().sum(), (x, weight))
    assert torch.equal(x.grad, expected_x)
    assert torch.equal(weight.grad, expected_w)


@needs_onednn
def test_tracing_compiling_and_modes_take_aten(monkeypatch):
    x, weight, b = operands((5, 16))
    with cpu_linear_set_to('onednn'), torch.no_grad():
        graph = torch.jit.trace(lambda t: linear(t, weight, b), x).graph
        assert 'aten::linear' in str(graph)
        assert 'mkldnn' not in str(graph)
        code = torch.fx.symbolic_trace(lambda t: linear(t, weight, b)).code
        assert 'linear' in code and 'mkldnn' not in code
        with FlopCounterMode(display=False) as counter:
            assert linear_path(x, weight, b) == 'aten'
            linear(x, weight, b)
        assert counter.get_total_flops() == 2 * 5 * 16 * 24
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert linear_path(x, weight, b) == 'aten'
            assert linear(x, weight, b).dtype == torch.bfloat16
        assert linear_path(x, weight, b) == 'onednn'
        for name in ('_is_compiling', '_is_exporting'):
            with monkeypatch.context() as patch:
                patch.setattr(linear_ops, name, lambda: True)
                assert linear_path(x, weight, b) == 'aten'


@needs_onednn
def test_linear_module_keeps_hooks():
    layer = nn.Linear(16, 24)
    x = torch.randn(3, 16)
    seen = []
    with cpu_linear_set_to('onednn'), torch.no_grad():
        assert close(linear_module(layer, x), layer(x))
        handle = layer.register_forward_hook(
            lambda module, args, out: seen.append(out.shape))
        linear_module(layer, x)
        handle.remove()
    assert seen == [(3, 24)]


def test_setting_and_bad_values():
    assert cpu_linear_setting() in CPU_LINEARS
    previous = set_cpu_linear('aten')
    try:
        assert cpu_linear_setting() == 'aten'
        assert cpu_linear() == 'aten'
        assert cpu_linear_reason().startswith('aten (set by ')
        with cpu_linear_set_to('onednn'):
            assert cpu_linear_setting() == 'onednn'
        assert cpu_linear_setting() == 'aten'
        with pytest.raises(ValueError, match='onednn'):
            set_cpu_linear('mkl')
    finally:
        set_cpu_linear(previous)


def run_with_env(value):
    code = ('from mmtokred.ops.linear import cpu_linear_setting, '
            'cpu_linear_reason; print(cpu_linear_setting()); '
            'print(cpu_linear_reason())')
    env = dict(__import__('os').environ, **{CPU_LINEAR_ENV: value})
    return subprocess.run([sys.executable, '-c', code], env=env,
                          capture_output=True, text=True)


def test_env_var_sets_the_path():
    result = run_with_env('aten')
    assert result.returncode == 0, result.stderr
    setting, reason = result.stdout.splitlines()
    assert setting == 'aten'
    assert reason == f'aten (set by {CPU_LINEAR_ENV} or set_cpu_linear)'


def test_bad_env_var_names_variable_and_choices():
    result = run_with_env('mkl')
    assert result.returncode != 0
    assert CPU_LINEAR_ENV in result.stderr
    assert str(CPU_LINEARS) in result.stderr
    assert "'mkl'" in result.stderr


def build_backbone(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(type='TokenReductionVisionTransformer',
                             **SMALL, **kwargs)).eval()


@needs_onednn
@pytest.mark.parametrize('kwargs', [dict(), dict(qkv_bias=False),
                                    dict(init_values=0.1)])
def test_backbone_paths_agree(monkeypatch, kwargs):
    model = build_backbone(**kwargs)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 4, 64, 64,
                    generator=torch.Generator().manual_seed(1))
    calls = []
    onednn_linear = linear_ops.onednn_linear

    def counted(*args):
        calls.append(tuple(args[1].shape))
        return onednn_linear(*args)

    monkeypatch.setattr(linear_ops, 'onednn_linear', counted)
    with torch.inference_mode():
        with cpu_linear_set_to('aten'):
            expected = model(x)
        assert calls == []
        with cpu_linear_set_to('onednn'):
            got = model(x)
    # qkv, proj and the MLP's two products in each block.
    width = SMALL['embed_dims']
    assert calls == [(3 * width, width), (width, width),
                     (4 * width, width), (width, 4 * width)] * SMALL['depth']
    assert close(got, expected)
    assert list(model.state_dict()) == keys
    assert list(build_backbone(**kwargs).state_dict()) == keys


@needs_onednn
def test_backbone_mlp_hooks_run_on_either_path():
    model = build_backbone()
    x = torch.randn(1, 3, 4, 64, 64)
    seen = []
    model.blocks[0].mlp.layers[0][0].register_forward_hook(
        lambda module, args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        for path in ('aten', 'onednn'):
            with cpu_linear_set_to(path):
                model(x)
    assert len(seen) == 2 and seen[0] == seen[1]


@needs_onednn
def test_backbone_flops_counted_on_either_path():
    model = build_backbone()
    x = torch.randn(1, 3, 4, 64, 64)
    counts = []
    for path in ('aten', 'onednn'):
        with cpu_linear_set_to(path):
            counts.append(count_gflops(lambda: model(x)))
    assert counts[0] == counts[1] > 0


def test_achievable_rate_times_each_path():
    fp32 = achievable_rate(torch.float32, torch.device('cpu'), 32, 16,
                           repeats=1)
    expected = ['aten', 'onednn'] if MACHINE.onednn else ['aten']
    assert sorted(fp32['paths']) == expected
    assert fp32['path'] in expected
    assert fp32['gflops'] == max(fp32['paths'].values())
    bf16 = achievable_rate(torch.bfloat16, torch.device('cpu'), 32, 16,
                           repeats=1)
    assert list(bf16['paths']) == ['aten']


def test_limit_lines_show_the_paths():
    achievable = dict(gflops=141., path='onednn',
                      paths=dict(aten=95.2, onednn=141.),
                      shape=[1568, 768, 3072])
    line = limit_lines({'fp32': dict(achievable=achievable, nominal=None)},
                       {'fp32': 70.5}, 'model')
    assert line.startswith('fp32 limit: achievable 141 GFLOP/s (onednn; '
                           'aten 95; measured here: a 1568 x 768 @ 768 x '
                           '3072 product)')
    assert 'reaches 50% of it' in line


def test_compare_refuses_a_bad_linear_kernel():
    from mmtokred.benchmark.compare import compare
    with pytest.raises(ValueError, match='linear_kernel must be one of'):
        compare('configs/videomae_dense.py', linear_kernel='mkl')
