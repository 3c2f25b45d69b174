import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mmtokred.ops import (PADDING_BIAS, POSITIONS, REPRESENTATIVES,
                          TokenState, attention, bipartite_soft_matching,
                          joint_merge_prune, merge_schedule, merge_with_sizes,
                          neighbour_merge, similarity_prune_index,
                          tubelet_pixels, weighted_mean, window_layout,
                          window_scores)
from mmtokred.ops.attention import (CPU_KERNEL_ENV, cpu_kernel,
                                    cpu_kernel_reason, cpu_kernel_set_to,
                                    key_bias_mode, key_bias_mode_set_to,
                                    record_key_bias_choice, set_cpu_kernel)
from mmtokred.ops.cosine import cosine_similarities
from mmtokred.ops.importance import (attention_sharpness_importance,
                                     pooled_query_importance,
                                     received_attention_importance)


def test_pool_without_sizes_is_plain_mean():
    x = torch.randn(2, 7, 5)
    assert torch.equal(TokenState().pool(x), x.mean(1))


def test_pool_weights_tokens_by_size():
    # Two tokens standing for 3 and 1 patches equal the 4 patches they hold.
    patches = torch.randn(1, 4, 6)
    merged = torch.stack([patches[:, :3].mean(1), patches[:, 3]], dim=1)
    state = TokenState(size=torch.tensor([[[3.], [1.]]]))
    torch.testing.assert_close(state.pool(merged), patches.mean(1))


@pytest.mark.parametrize('package', ['ops', 'reducers'])
def test_ops_and_reducers_import_no_openmmlab_and_no_timm(package):
    """mmtokred.ops and mmtokred.reducers are pure torch: importing them
    loads neither OpenMMLab nor timm."""
    from conftest import ROOT
    code = (f'import sys, mmtokred.{package}; '
            "print(sorted({m.split('.')[0] for m in sys.modules "
            "if m.split('.')[0] in ('mmengine', 'mmcv', 'mmaction', "
            "'timm')}))")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


# --- fused attention with a per-key bias --------------------------------
@pytest.mark.parametrize('mode', ['mask', 'channel'])
@pytest.mark.parametrize('head_dim', [64, 60, 8])
def test_key_bias_each_way_equals_explicit_bias(head_dim, mode):
    q, k, v = torch.randn(3, 2, 4, 30, head_dim).unbind(0)
    size = torch.randint(1, 6, (2, 30)).float()
    state = TokenState(size=size[..., None])
    bias = state.key_bias(proportional=True)
    explicit = F.scaled_dot_product_attention(
        q, k, v, attn_mask=size.log()[:, None, None, :], scale=0.125)
    with key_bias_mode_set_to(mode):
        torch.testing.assert_close(attention(q, k, v, 0.125, bias),
                                   explicit)


@pytest.mark.parametrize('mode', ['mask', 'channel'])
def test_padding_bias_hides_padded_keys(mode):
    q, k, v = torch.randn(3, 1, 2, 10, 16).unbind(0)
    size = torch.ones(1, 10, 1)
    size[:, 7:] = 0
    for proportional in (False, True):
        bias = TokenState(size=size, padded=True).key_bias(proportional)
        with key_bias_mode_set_to(mode):
            got = attention(q, k, v, 0.25, bias)
        expected = F.scaled_dot_product_attention(
            q[:, :, :7], k[:, :, :7], v[:, :, :7], scale=0.25)
        torch.testing.assert_close(got[:, :, :7], expected)


def test_key_bias_mode_by_device_measurement_and_setting():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert key_bias_mode(cpu, torch.float32) == 'channel'  # the rule
    assert key_bias_mode(cuda, torch.float16) == 'channel'
    try:
        record_key_bias_choice(cuda, torch.float16, 'mask')
        assert key_bias_mode(cuda, torch.float16) == 'mask'
        assert key_bias_mode(cuda, torch.bfloat16) == 'channel'  # per dtype
    finally:
        record_key_bias_choice(cuda, torch.float16, None)
    with key_bias_mode_set_to('mask'):
        assert key_bias_mode(cpu, torch.float32) == 'mask'
    with pytest.raises(ValueError,
                       match="record a measured choice, not 'auto'"):
        record_key_bias_choice(cpu, torch.float32, 'auto')
    with pytest.raises(ValueError, match="one of .'auto', 'mask', "
                       "'channel'.*'bias'"):
        with key_bias_mode_set_to('bias'):
            pass


@pytest.mark.parametrize('kernel', ['fused', 'blocked'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('tokens', [30, 300])  # one block of queries, three
@pytest.mark.parametrize('with_bias', [False, True])
def test_both_cpu_half_precision_kernels_equal_explicit_attention(
        kernel, dtype, tokens, with_bias):
    # Each kernel forced, on whatever CPU runs the tests.
    q, k, v = torch.randn(3, 2, 4, tokens, 32).unbind(0)
    size = torch.randint(0, 4, (2, tokens, 1)).float()  # 0: padding
    bias = TokenState(size=size, padded=True).key_bias(True) \
        if with_bias else None
    expected = F.scaled_dot_product_attention(
        q, k, v, scale=0.2,
        attn_mask=None if bias is None else bias[:, None, None, :])
    with cpu_kernel_set_to(kernel):
        assert cpu_kernel(dtype) == kernel
        got = attention(q.to(dtype), k.to(dtype), v.to(dtype), 0.2, bias)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.02)


@pytest.mark.parametrize('has_units', [False, True])
def test_auto_kernel_is_fused_exactly_where_torch_has_matrix_units(
        monkeypatch, has_units):
    attention_module = sys.modules['mmtokred.ops.attention']
    monkeypatch.setattr(attention_module, 'fused_kernel_has_matrix_units',
                        lambda dtype: has_units)
    ran = []
    monkeypatch.setattr(attention_module, 'blocked_attention',
                        lambda *args: ran.append('blocked') or args[0])
    q = torch.randn(1, 2, 10, 8, dtype=torch.bfloat16)
    with cpu_kernel_set_to('auto'):
        for dtype in (torch.bfloat16, torch.float16):
            assert cpu_kernel(dtype) == ('fused' if has_units else 'blocked')
            assert ('AMX' in cpu_kernel_reason(dtype))
        attention(q, q, q, 0.5)
        # fp32 and anything off the CPU always take torch's fused kernel.
        assert cpu_kernel(torch.float32) == 'fused'
    assert ran == ([] if has_units else ['blocked'])
    with cpu_kernel_set_to('blocked'):
        assert cpu_kernel(torch.bfloat16) == 'blocked'
        assert cpu_kernel(torch.float32) == 'fused'


def test_auto_kernel_asks_torch_for_amx():
    # What torch reports of this CPU decides; the test runs on every CPU.
    amx = torch.backends.mkldnn.is_available() and \
        torch.cpu._is_amx_tile_supported()
    with cpu_kernel_set_to('auto'):
        assert cpu_kernel(torch.bfloat16) == ('fused' if amx else 'blocked')


def test_unknown_kernel_settings_are_refused():
    with pytest.raises(ValueError, match="one of .'auto', 'fused', "
                       "'blocked'.*'fast'"):
        set_cpu_kernel('fast')
    from conftest import ROOT
    result = subprocess.run(
        [sys.executable, '-c', 'import mmtokred.ops'], cwd=ROOT,
        capture_output=True, text=True,
        env={**os.environ, CPU_KERNEL_ENV: 'amx'})
    assert result.returncode != 0
    assert f"{CPU_KERNEL_ENV} must be one of ('auto', 'fused', 'blocked'), " \
        "got 'amx'" in result.stderr


# --- precision: what half precision on a GPU would break -------------------
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_padding_bias_stays_finite_in_half_precision(dtype):
    size = torch.tensor([[[2.], [1.], [0.], [0.]]])
    for proportional in (False, True):
        bias = TokenState(size=size, padded=True).key_bias(proportional)
        assert bias.dtype == torch.float32
        # A flash kernel's tile of padded keys alone keeps a finite maximum.
        assert torch.isfinite(bias.to(dtype)).all()
        # ... and a padded key still gets no attention beside a real one.
        logits = torch.stack([bias[0], bias[0] - 50], 0).to(dtype)
        assert (logits.float().softmax(-1)[:, 2:] == 0).all()
    assert torch.tensor(PADDING_BIAS + 100.).exp() == 0


def test_pool_sums_in_fp32_so_fp16_does_not_overflow():
    # ViT-B's 1568 tokens with a channel at 50: the fp16 sum (78400) is past
    # fp16's largest number, the mean is not.
    x = torch.full((1, 1568, 4), 50., dtype=torch.float16)
    state = TokenState(size=torch.ones(1, 1568, 1))
    pooled = state.pool(x)
    assert pooled.dtype == torch.float16
    assert torch.equal(pooled, torch.full((1, 4), 50., dtype=torch.float16))
    assert torch.equal(weighted_mean(x, state.size), pooled)


def _similar_tokens(n=1568, d=64, seed=0):
    # Near-duplicate tokens: their similarities differ in the 4th digit,
    # which bf16 products would round away into ties.
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 8, d, generator=generator)
    return (base.repeat(1, n // 8, 1) +
            0.05 * torch.randn(1, n, d, generator=generator))


def test_similarities_stay_fp32_under_autocast():
    a, b = _similar_tokens()[:, ::2], _similar_tokens()[:, 1::2]
    expected = cosine_similarities(a, b)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = cosine_similarities(a, b)
        assert (a @ b.transpose(1, 2)).dtype == torch.bfloat16  # autocast on
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_reducers_decide_alike_with_and_without_autocast():
    x = _similar_tokens()
    outside = bipartite_soft_matching(x, 700)[0](x)
    pruned = similarity_prune_index(x, 700)[0]
    state = TokenState(size=torch.ones(1, x.shape[1], 1))
    importance = torch.rand(1, x.shape[1],
                            generator=torch.Generator().manual_seed(1))
    joint = joint_merge_prune(x, x, state, importance, 700, 0.9)[2]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(bipartite_soft_matching(x, 700)[0](x), outside)
        assert torch.equal(similarity_prune_index(x, 700)[0], pruned)
        assert torch.equal(
            joint_merge_prune(x, x, state, importance, 700, 0.9)[2], joint)


def test_no_bias_without_sizes_or_padding():
    assert TokenState().key_bias(True) is None
    assert TokenState(size=torch.ones(1, 3, 1)).key_bias(False) is None


# --- bipartite soft matching ---------------------------------------------
def test_matching_r0_is_identity():
    x = torch.randn(2, 9, 4)
    merge, r = bipartite_soft_matching(x, 0)
    assert r == 0 and merge(x) is x


def test_matching_merges_the_most_similar_pair():
    metric = torch.tensor([[[1., 0.], [0., 1.], [0.6, 0.8], [1., 0.01]]])
    merge, r = bipartite_soft_matching(metric, 1)
    merged = merge(torch.arange(4.).view(1, 4, 1), 'sum')
    # A = tokens 0, 2; B = 1, 3: token 0 matches token 3 best (cos ~ 1).
    assert r == 1 and merged.flatten().tolist() == [2., 1., 3.]


def test_weighted_merge_keeps_size_weighted_mean_and_sources():
    x = torch.randn(2, 16, 8)
    state = TokenState(size=torch.randint(1, 4, (2, 16, 1)).float(),
                       source=torch.eye(16).expand(2, -1, -1))
    total = (x * state.size).sum(1)
    for r in (5, 3, 2):
        merge, _ = bipartite_soft_matching(torch.randn(2, x.shape[1], 4), r)
        x, state = merge_with_sizes(merge, x, state)
    torch.testing.assert_close((x * state.size).sum(1), total)
    assert x.shape[1] == 6
    # Every input patch is held by exactly one token.
    assert torch.equal(state.source.sum(1), torch.ones(2, 16))


def test_protected_tokens_stay_first_and_unmerged():
    x = torch.randn(1, 10, 4)
    merge, r = bipartite_soft_matching(x, 100, protected=3)
    out = merge(x)
    assert r == 3 and out.shape[1] == 7
    # First and in their order (A: 0, 2; B: 1), neither merged nor merged
    # into.
    torch.testing.assert_close(out[:, :3], x[:, :3])


def test_matching_rejects_negative_r():
    with pytest.raises(ValueError, match='r must be >= 0'):
        bipartite_soft_matching(torch.randn(1, 4, 2), -1)


# --- schedules -------------------------------------------------------------
def test_schedules():
    assert merge_schedule(8, 3) == [8, 8, 8]
    decreasing = merge_schedule(10, 12, 'decreasing')
    assert decreasing[0] == 20 and decreasing[-1] == 0
    assert abs(sum(decreasing) - 120) <= 6
    assert merge_schedule([1, 2], 2) == [1, 2]
    with pytest.raises(ValueError, match='12 values'):
        merge_schedule([1, 2], 12)
    with pytest.raises(ValueError, match='schedule'):
        merge_schedule(3, 12, 'cosine')
    with pytest.raises(ValueError, match='>= 0'):
        merge_schedule(-2, 12)


# --- neighbour merging -----------------------------------------------------
def embed_inputs(t=8, h=64, w=96, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv3d(3, 24, (2, 16, 16), (2, 16, 16))
    video = torch.randn(batch, 3, t, h, w, generator=generator)
    grid = (t // 2) * (h // 16) * (w // 16)
    pos = torch.randn(1, grid, 24, generator=generator)
    return conv, video, pos


def test_nothing_merged_equals_the_projection():
    conv, video, pos = embed_inputs()
    tokens, state = neighbour_merge(video, conv.weight, conv.bias, pos,
                                    (2, 2, 2), num_merged=0)
    dense = conv(video).flatten(2).transpose(1, 2) + pos
    torch.testing.assert_close(tokens, dense, rtol=1e-5, atol=1e-5)
    assert torch.equal(state.size, torch.ones(2, 96, 1))


@pytest.mark.parametrize('representative', REPRESENTATIVES)
@pytest.mark.parametrize('position', POSITIONS)
@pytest.mark.parametrize('window', [(2, 2, 2), (1, 2, 1), (3, 1, 2)])
def test_sizes_and_sources_account_for_every_tubelet(representative,
                                                     position, window):
    conv, video, pos = embed_inputs()
    tokens, state = neighbour_merge(
        video, conv.weight, conv.bias, pos, window, num_merged=5,
        representative=representative, position=position,
        track_source=True)
    volume = window[0] * window[1] * window[2]
    assert tokens.shape == (2, 96 - 5 * (volume - 1), 24)
    assert torch.equal(state.size.sum(1).flatten(), torch.full((2, ), 96.))
    assert torch.equal(state.source.sum(1), torch.ones(2, 96))
    assert torch.equal(state.source.sum(2, keepdim=True), state.size)


def test_leftover_tubelets_stay_unmerged():
    members, leftovers = window_layout((4, 3, 5), (2, 2, 2))
    assert members.shape == (2 * 1 * 2, 8)
    assert leftovers.numel() == 60 - 32
    assert sorted(members.flatten().tolist() + leftovers.tolist()) == \
        list(range(60))


def test_uniform_windows_merge_first_and_avg_is_the_mean_embedding():
    conv, video, pos = embed_inputs(batch=1)
    # Make window 1 of the (2, 2, 2) tiling constant in time and space.
    members, _ = window_layout((4, 4, 6), (2, 2, 2))
    video[:, :, 0:4, 0:32, 32:64] = 0.5
    scores = window_scores(tubelet_pixels(video, (2, 16, 16)).flatten(1, 3),
                           members, 'l1')
    assert scores[0].argmin() == 1 and scores[0, 1] == 0
    tokens, state = neighbour_merge(
        video, conv.weight, conv.bias, pos, (2, 2, 2), num_merged=1,
        representative='avg', position='average', track_source=True)
    merged_token = state.size[0, :, 0].argmax()
    assert state.size[0, merged_token] == 8
    embeddings = conv(video).flatten(2).transpose(1, 2) + pos
    expected = embeddings[0, members[1]].mean(0)
    torch.testing.assert_close(tokens[0, merged_token], expected,
                               rtol=1e-5, atol=1e-5)


def test_threshold_mode_batched_equals_per_clip():
    conv, video, pos = embed_inputs(batch=3)
    video[0, :, :, :32] = 0.  # a flat region: more windows under threshold
    batched, state = neighbour_merge(video, conv.weight, conv.bias, pos,
                                     (1, 2, 2), threshold=0.5)
    assert state.padded
    for i in range(3):
        alone, alone_state = neighbour_merge(video[i:i + 1], conv.weight,
                                             conv.bias, pos, (1, 2, 2),
                                             threshold=0.5)
        n = alone.shape[1]
        torch.testing.assert_close(batched[i:i + 1, :n], alone)
        assert torch.equal(state.size[i:i + 1, :n], alone_state.size)
        assert (state.size[i, n:] == 0).all()


@pytest.mark.parametrize('kwargs, field', [
    (dict(window=(5, 1, 1), num_merged=1), 'window'),
    (dict(window=(2, 2, 2), num_merged=13), 'num_merged'),
    (dict(window=(2, 2, 2), num_merged=1, distance='l3'), 'distance'),
    (dict(window=(2, 2, 2), num_merged=1, representative='max'),
     'representative'),
])
def test_impossible_merges_raise(kwargs, field):
    conv, video, pos = embed_inputs()
    with pytest.raises(ValueError, match=field):
        neighbour_merge(video, conv.weight, conv.bias, pos, **kwargs)


@pytest.mark.parametrize('score', ['received', 'pooled_query', 'sharpness'])
def test_attention_importances_stay_finite_in_fp16_with_large_q_and_k(score):
    """q k^T of these passes fp16's largest number (65504) before scaling,
    not after (as the fused kernels scale first)."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, 2, 6, 64, generator=generator) * 8 + 36
               for _ in range(3))
    assert ((q @ k.transpose(-2, -1)).half() == torch.inf).any()
    importance = {
        'received': lambda *t: received_attention_importance(*t, 0.125),
        'pooled_query': lambda *t: pooled_query_importance(*t, 0.125),
        'sharpness': lambda q, k, v: attention_sharpness_importance(
            q, k, 0.125),
    }[score]
    half = importance(q.half(), k.half(), v.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), importance(q, k, v),
                               rtol=0.05, atol=2e-3)
