"""AttentionKernelHook (mmtokred/attention_kernel_hook.py): the key bias
mode and the packed attention kernel chosen by measurement before the
loops, never inside a forward pass."""
import types

import pytest
import torch

from conftest import build_small
from mmtokred.attention_kernel_hook import AttentionKernelHook, graded_lengths
from mmtokred.ops.attention import (key_bias_mode, key_bias_mode_reason,
                                    key_bias_mode_set_to,
                                    record_key_bias_choice)
from mmtokred.ops.packed_attention import (packed_kernel, packed_kernel_reason,
                                           packed_kernel_set_to,
                                           record_packed_choice)

CPU = torch.device('cpu')
THRESHOLD_TOME = dict(blocks=dict(type='ToMe', r=6, threshold=0.2),
                      proportional_attention=True)


class Logger:
    def __init__(self) -> None:
        self.lines = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def runner(token_reduction, batch_size: int = 4, fp16: bool = False):
    model = torch.nn.Module()
    model.backbone = build_small(token_reduction)
    loop = types.SimpleNamespace(
        fp16=fp16, dataloader=types.SimpleNamespace(batch_size=batch_size))
    return types.SimpleNamespace(model=model, test_loop=loop,
                                 logger=Logger())


@pytest.fixture(autouse=True)
def _forget_measurements():
    yield
    for dtype in (torch.float32, torch.bfloat16):
        record_packed_choice(CPU, dtype, None)
        record_key_bias_choice(CPU, dtype, None)


def test_graded_lengths_span_a_quarter_to_all_the_tokens():
    assert graded_lengths(1568, 4) == [392, 784, 1176, 1568]
    assert graded_lengths(64, 1) == [64]


def chosen(line: str) -> str:
    return line.split(': ')[1].split(',')[0]


def test_the_hook_measures_and_auto_then_runs_the_fastest():
    run = runner(THRESHOLD_TOME)
    AttentionKernelHook(repeats=1, on_cpu=True).before_test(run)
    bias, packed = run.logger.lines
    assert bias.startswith('attention key bias on cpu in torch.float32: ')
    assert 'at 4 clips of 64 tokens (mask ' in bias
    assert key_bias_mode(CPU, torch.float32) == chosen(bias)
    assert 'measured' in key_bias_mode_reason(CPU, torch.float32)
    assert packed.startswith('packed attention on cpu in torch.float32: ')
    assert '4 clips of 16 to 64 tokens (per_clip ' in packed
    assert packed_kernel(CPU) == chosen(packed)
    assert 'measured' in packed_kernel_reason(CPU)


def test_a_loop_under_autocast_is_measured_in_the_autocast_dtype():
    run = runner(THRESHOLD_TOME, fp16=True)  # tools/test.py --amp
    AttentionKernelHook(repeats=1, on_cpu=True).before_test(run)
    assert all(' on cpu in torch.bfloat16: ' in line
               for line in run.logger.lines)
    assert 'measured' in packed_kernel_reason(CPU, torch.bfloat16)


def test_a_fixed_budget_with_proportional_attention_measures_the_bias():
    run = runner(dict(blocks=dict(type='ToMe', r=6),
                      proportional_attention=True), batch_size=1)
    AttentionKernelHook(repeats=1, on_cpu=True).before_test(run)
    [line] = run.logger.lines
    assert line.startswith('attention key bias')


@pytest.mark.parametrize('case', ['cpu', 'dense', 'one clip', 'set'])
def test_the_hook_leaves_the_choices_alone(case):
    reduction = None if case == 'dense' else THRESHOLD_TOME
    run = runner(reduction, batch_size=1 if case == 'one clip' else 4)
    hook = AttentionKernelHook(repeats=1, on_cpu=case != 'cpu')
    fixed = 'flex' if case == 'set' else 'auto'
    with packed_kernel_set_to(fixed), key_bias_mode_set_to(
            'channel' if case == 'set' else 'auto'):
        hook.before_test(run)
    if case == 'one clip':  # one clip never packs; its bias is measured
        assert [line.split(':')[0] for line in run.logger.lines] == [
            'attention key bias on cpu in torch.float32']
    else:
        assert run.logger.lines == []
    assert 'not measured' in packed_kernel_reason(CPU)


def test_repeats_are_checked_at_build_time():
    with pytest.raises(ValueError, match='repeats must be an integer >= 1'):
        AttentionKernelHook(repeats=0)
