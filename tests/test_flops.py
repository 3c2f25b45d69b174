import pytest
import torch
import torch.nn.functional as F

from mmtokred.benchmark.flops import count_gflops


def test_attention_is_counted():
    q = torch.randn(2, 3, 50, 16)
    # QK^T and AV: 2 * B * H * N * N * D multiply-accumulates.
    expected = 2 * 2 * 3 * 50 * 50 * 16 / 1e9
    fused = count_gflops(lambda: F.scaled_dot_product_attention(q, q, q))
    explicit = count_gflops(
        lambda: (q @ q.transpose(-2, -1)).softmax(-1) @ q)
    assert fused == pytest.approx(expected)
    assert explicit == pytest.approx(expected)


def test_linear_is_counted_in_multiply_accumulates():
    layer = torch.nn.Linear(8, 4, bias=False)
    assert count_gflops(lambda: layer(torch.randn(5, 8))) == \
        pytest.approx(5 * 8 * 4 / 1e9)
