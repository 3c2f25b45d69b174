"""Packed batches (mmtokred/ops/packed.py): clips of different lengths in one
sequence give what each clip gives alone, for every reducer and kernel."""
import shutil

import pytest
import torch
from mmaction.registry import MODELS
from torch._dynamo.utils import counters

from conftest import FIXED_BUDGETS, TINY_CONFIG, build_small
from mmtokred.measure.flops import count_gflops
from mmtokred.measure.host_reads import HostReads
from mmtokred.measure.observe import TokenRecorder
from mmtokred.ops import TokenState, attention, weighted_mean
from mmtokred.ops.packed import (pack, pack_equal, pack_padded, packed_cat,
                                 split_clips)
from mmtokred.ops.packed_attention import (PACKED_KERNELS, packed_attention,
                                           packed_kernel, packed_kernel_reason,
                                           packed_kernel_set_to,
                                           record_packed_choice)
from mmtokred.ops import packed_flex
from mmtokred.ops.packed_flex import document_mask
from mmtokred.ops.token_state import packed_weighted_mean
from mmtokred.reducers import AttentionInputs, build_reducer

#: NEPAM's threshold mode: clips keep different numbers of tokens.
THRESHOLD_NEPAM = dict(type='NEPAM', ratio=None, threshold=0.5)
#: Every block reducer (their budgets as in conftest), after threshold NEPAM.
BLOCK_REDUCERS = {
    name: reduction['blocks'] for name, reduction in FIXED_BUDGETS.items()
    if 'blocks' in reduction and 'input' not in reduction}
BLOCK_REDUCERS['tome_threshold'] = dict(type='ToMe', r=6, threshold=0.2)
KERNELS = [k for k in PACKED_KERNELS if k != 'auto']


def compiler_missing() -> bool:
    return shutil.which('c++') is None and shutil.which('g++') is None


def kernel_param(kernel):
    # flex_attention runs compiled: torch's inductor needs a C++ compiler;
    # varlen_attn is FlashAttention (CUDA, half precision): tests/
    # test_backbone_cuda.py runs it.
    return pytest.param(kernel, marks=[
        pytest.mark.skipif(kernel == 'flex' and compiler_missing(),
                           reason='flex_attention compiles C++: no compiler '
                           'here'),
        pytest.mark.skipif(kernel == 'varlen',
                           reason='varlen_attn runs on CUDA in fp16/bf16: '
                           'tests/test_backbone_cuda.py')])


def clips_of_different_redundancy(batch: int = 4, seed: int = 0):
    """Noise clips, clip i flat and static over its top i / batch rows; the
    last clip is noise throughout (no window merges: it keeps every token)."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 3, 8, 64, 64, generator=generator)
    for i in range(batch - 1):
        video[batch - 2 - i, :, :, :64 * (i + 1) // batch] = 0.3
    return video


def packed_qkv(lengths, heads=2, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v = (torch.randn(1, heads, total, dim, generator=generator)
               for _ in range(3))
    bias = torch.randn(1, total, generator=generator)
    return q, k, v, bias


@pytest.mark.parametrize('kernel', [kernel_param(k) for k in KERNELS])
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('lengths', [(5, 17, 1, 9), (12, 0, 7), (16, )])
def test_packed_attention_is_each_clip_alone(kernel, with_bias, lengths):
    q, k, v, bias = packed_qkv(lengths)
    bias = bias if with_bias else None
    got = packed_attention(q, k, v, 0.3, lengths, bias, kernel=kernel)
    assert got.shape == q.shape
    start = 0
    for n in lengths:
        clip = slice(start, start + n)
        alone = attention(q[:, :, clip], k[:, :, clip], v[:, :, clip], 0.3,
                          None if bias is None else bias[:, clip])
        torch.testing.assert_close(got[:, :, clip], alone, rtol=1e-5,
                                   atol=1e-5)
        start += n


def test_packed_attention_refuses_lengths_that_do_not_cover_the_tokens():
    q, k, v, _ = packed_qkv((4, 4))
    with pytest.raises(ValueError, match='sum to the 8 tokens'):
        packed_attention(q, k, v, 1., (4, 3))
    with pytest.raises(ValueError, match='kernel must be one of'):
        packed_attention(q, k, v, 1., (4, 4), kernel='padded')


def test_kernel_choice_by_device_dtype_measurement_and_override():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert packed_kernel(cpu) == 'per_clip'
    assert packed_kernel(cuda) == 'nested'  # fp32: FlashAttention has none
    assert packed_kernel(cuda, torch.float16) == 'varlen'
    assert packed_kernel(cuda, torch.bfloat16, dropout=True) == 'nested'
    try:
        record_packed_choice(cuda, torch.float16, 'flex')
        assert packed_kernel(cuda, torch.float16) == 'flex'
        assert 'measured' in packed_kernel_reason(cuda, torch.float16)
        assert packed_kernel(cuda, torch.bfloat16) == 'varlen'  # per dtype
        # flex has no dropout: training falls back to the rule.
        assert packed_kernel(cuda, torch.float16, dropout=True) == 'nested'
    finally:
        record_packed_choice(cuda, torch.float16, None)
    assert 'not measured' in packed_kernel_reason(cuda, torch.float16)
    with packed_kernel_set_to('flex'):
        assert packed_kernel(cpu) == 'flex'
    assert packed_kernel(cpu) == 'per_clip'
    with pytest.raises(ValueError, match='MMTOKRED_PACKED_ATTENTION|kernel'):
        with packed_kernel_set_to('fast'):
            pass


def test_a_kernel_that_cannot_run_here_is_refused_by_name():
    q, k, v, _ = packed_qkv((4, 4))
    with pytest.raises(ValueError, match="'varlen' packed attention kernel "
                       'cannot run here: it runs FlashAttention, on CUDA'):
        packed_attention(q, k, v, 1., (4, 4), kernel='varlen')
    with pytest.raises(ValueError, match='no dropout'):
        packed_attention(q, k, v, 1., (4, 4), dropout_p=0.1, kernel='flex')


@pytest.mark.skipif(compiler_missing(), reason='flex compiles C++')
def test_flex_runs_nine_length_sets_on_one_compiled_kernel():
    """A threshold budget gives every batch a new total length; compiled for
    static shapes, flex recompiled for each, and past dynamo's recompile
    limit (8) ran eager flex_attention over the whole score matrix."""
    generator = torch.Generator().manual_seed(5)
    length_sets = [tuple(int(n) for n in torch.randint(
        1, 300, (4, ), generator=generator)) for _ in range(9)]
    assert len({sum(lengths) for lengths in length_sets}) == 9
    torch._dynamo.reset()
    graphs = counters['stats']['unique_graphs']
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for lengths in length_sets:
            q, k, v, _ = packed_qkv(lengths, dim=16, seed=sum(lengths))
            got = packed_attention(q, k, v, 0.25, lengths, kernel='flex')
            expected = packed_attention(q, k, v, 0.25, lengths,
                                        kernel='per_clip')
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert counters['stats']['unique_graphs'] - graphs <= 2


@pytest.mark.parametrize('lengths', [(5, 300, 0, 129), (128, 128), (7, ),
                                     (200, 56, 1, 250)])
def test_flex_block_mask_from_the_clip_spans_equals_create_block_mask(
        lengths):
    from torch.nn.attention.flex_attention import create_block_mask
    clip = torch.repeat_interleave(torch.arange(len(lengths)),
                                   torch.tensor(lengths))
    total = sum(lengths)
    expected = create_block_mask(
        lambda b, h, q, k: clip[q] == clip[k], None, None, total, total,
        device='cpu')
    got = document_mask(lengths, torch.device('cpu'))
    assert torch.equal(got.to_dense(), expected.to_dense())
    assert torch.equal(got.full_kv_num_blocks, expected.full_kv_num_blocks)


def test_flex_gets_head_dims_of_16_or_more(monkeypatch):
    """Inductor's CUDA flex_attention has no kernel under 16 channels a
    head (torch/_inductor/kernel/flex/flex_attention.py): the tiny models'
    12 are padded with zero channels."""
    from torch.nn.attention.flex_attention import flex_attention
    widths = []

    def eager_flex(q, k, v, block_mask, scale, bias):
        widths.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return flex_attention(q, k, v, block_mask=block_mask, scale=scale)

    monkeypatch.setattr(packed_flex, '_compiled_flex', lambda: eager_flex)
    lengths = (5, 17, 9)
    q, k, v, _ = packed_qkv(lengths, dim=12)
    got = packed_attention(q, k, v, 0.3, lengths, kernel='flex')
    assert widths == [(16, 16, 16)] and got.shape == q.shape
    torch.testing.assert_close(
        got, packed_attention(q, k, v, 0.3, lengths, kernel='per_clip'),
        rtol=1e-5, atol=1e-5)


def test_per_clip_attention_reads_nothing_from_the_device():
    """The CPU's kernel. On CPU, nested attention falls back to torch's math
    path, which splits by lengths read off the device, and a compiled flex
    runs eager under a dispatch mode: tests/test_backbone_cuda.py counts
    their waits on CUDA (``set_sync_debug_mode``)."""
    lengths = (5, 0, 17, 9)
    q, k, v, bias = packed_qkv(lengths)
    with HostReads() as reads:
        packed_attention(q, k, v, 0.3, lengths, bias, kernel='per_clip')
    assert reads.count == 0


def test_threshold_budgets_read_the_device_once_a_block_at_most():
    """The tiny demo model (4 blocks), 8 clips of graded redundancy, NEPAM's
    threshold then ToMe's, packed: one read of the clips' lengths after
    NEPAM and one of ToMe's counts a block (was one a clip and block)."""
    from mmengine.config import Config
    backbone = dict(Config.fromfile(TINY_CONFIG).model.backbone)
    backbone.update(token_reduction=dict(
        input=THRESHOLD_NEPAM, blocks=dict(type='ToMe', r=6, threshold=0.2)))
    model = MODELS.build(backbone).eval()
    video = clips_of_different_redundancy(batch=8)
    with torch.no_grad(), TokenRecorder(model) as recorder:
        model(video)
    per_block = recorder.clip_tokens_per_block
    assert len(set(per_block[0])) > 1 and per_block[-1] != per_block[0]
    with torch.no_grad(), HostReads() as reads:
        model(video)
    assert reads.count <= 1 + backbone['depth'], reads.count


def test_pooling_is_each_clips_weighted_mean_and_an_empty_clip_is_nan():
    lengths = (3, 0, 5)
    x = torch.randn(1, 8, 4)
    size = torch.randint(1, 5, (1, 8, 1)).float()
    pooled = packed_weighted_mean(x, size, lengths)
    assert pooled.shape == (3, 4)
    torch.testing.assert_close(pooled[0], weighted_mean(x[:, :3],
                                                        size[:, :3])[0])
    torch.testing.assert_close(pooled[2], weighted_mean(x[:, 3:],
                                                        size[:, 3:])[0])
    assert torch.isnan(pooled[1]).all()
    plain = packed_weighted_mean(x, None, lengths)
    torch.testing.assert_close(plain[2], x[0, 3:].mean(0))


def test_packing_keeps_each_clips_tokens_in_order():
    x = torch.arange(2 * 4 * 1.).reshape(2, 4, 1)
    size = torch.tensor([[1., 2, 0, 0], [1, 1, 1, 0]])[..., None]
    packed, state = pack_padded(x, TokenState(size=size, padded=True))
    assert state.lengths == (2, 3) and not state.padded
    assert packed.flatten().tolist() == [0., 1, 4, 5, 6]
    assert state.size.flatten().tolist() == [1., 2, 1, 1, 1]
    equal, equal_state = pack_equal(x, TokenState())
    assert equal.shape == (1, 8, 1) and equal_state.lengths == (4, 4)
    assert [c.shape[1] for c in split_clips(packed, state.lengths)] == [2, 3]
    assert torch.equal(pack(x, (1, 4)).flatten(), torch.tensor([0., 4, 5,
                                                                6, 7]))
    joined, joined_state = packed_cat(
        [x[:1, :2], x[1:, :0]], [TokenState(size=size[:1, :2]),
                                 TokenState()])
    assert joined_state.lengths == (2, 0) and joined.shape == (1, 2, 1)


@pytest.mark.parametrize('name', sorted(BLOCK_REDUCERS))
def test_block_reducer_on_a_packed_batch_is_each_clip_alone(name):
    """Clips of 0 (empty), 9, 16 and 5 tokens: each reduced as alone."""
    reducer = build_reducer(BLOCK_REDUCERS[name])
    reducer.bind(4)
    lengths = (0, 9, 16, 5)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, sum(lengths), 8, generator=generator)
    q, k, v, bias = packed_qkv(lengths, seed=3)
    size = torch.randint(1, 4, (1, sum(lengths), 1),
                         generator=generator).float()
    state = TokenState(size=size, lengths=lengths)
    inputs = AttentionInputs(q, k, v, 0.5, bias)
    got, got_state = reducer(x, inputs, state, 1)
    assert got_state.lengths[0] == 0
    clips = zip(split_clips(x, lengths), split_clips(q, lengths, 2),
                split_clips(k, lengths, 2), split_clips(v, lengths, 2),
                split_clips(bias, lengths), split_clips(size, lengths))
    start = 0
    for n, (x_i, q_i, k_i, v_i, b_i, s_i) in zip(got_state.lengths, clips):
        if not x_i.shape[1]:
            continue
        alone, alone_state = reducer(
            x_i, AttentionInputs(q_i, k_i, v_i, 0.5, b_i),
            TokenState(size=s_i), 1)
        assert alone.shape[1] == n
        torch.testing.assert_close(got[:, start:start + n], alone)
        torch.testing.assert_close(got_state.size[:, start:start + n],
                                   alone_state.sizes_like(alone).float())
        start += n
    assert start == got.shape[1]


def build(blocks=None, input_stage=THRESHOLD_NEPAM, **switches):
    return build_small(dict(input=input_stage, blocks=blocks, **switches))


@pytest.mark.parametrize('proportional', [False, True])
@pytest.mark.parametrize('name', [None] + sorted(BLOCK_REDUCERS))
def test_packed_backbone_equals_each_clip_alone(name, proportional):
    model = build(BLOCK_REDUCERS.get(name), track_source=True,
                  proportional_attention=proportional)
    video = clips_of_different_redundancy()
    with torch.no_grad(), TokenRecorder(model) as recorder:
        batched = model(video)
        lengths = recorder.clip_tokens_per_block[0]
        alone = []
        for clip in video:
            alone.append(model(clip[None]))
            source = recorder.final_state.source
            if name != 'token_pruning_fuse':  # its fused token's row is empty
                assert torch.equal(source.sum(1),
                                   torch.ones_like(source[:, 0]))
    assert len(set(lengths)) > 1, lengths  # clips of different sizes
    assert lengths[-1] == 64  # the noise clip keeps every token
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-5,
                               atol=1e-5)


def test_packed_batch_is_invariant_to_the_order_of_its_clips():
    model = build(dict(type='ToMe', r=6, threshold=0.2))
    video = clips_of_different_redundancy()
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        batched = model(video)
        assert torch.equal(batched, model(video))
        torch.testing.assert_close(model(video[order]), batched[order],
                                   rtol=1e-5, atol=1e-5)


def test_adaptive_tome_packs_a_batch_of_equal_clips():
    model = build(dict(type='ToMe', r=6, threshold=0.2), input_stage=None)
    video = clips_of_different_redundancy()
    with torch.no_grad(), TokenRecorder(model) as recorder:
        batched = model(video)
    assert recorder.clip_tokens_per_block[0] == (64, ) * 4
    assert recorder.final_state.lengths is not None
    with torch.no_grad():
        alone = torch.cat([model(clip[None]) for clip in video])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_adaptive_tome_merges_at_most_r_and_only_similar_pairs():
    strict = build(dict(type='ToMe', r=6, threshold=1.), input_stage=None)
    loose = build(dict(type='ToMe', r=6, threshold=-1.), input_stage=None)
    video = clips_of_different_redundancy()
    with torch.no_grad(), TokenRecorder(strict) as recorder:
        strict(video)
    assert recorder.clip_tokens_per_block == [(64, ) * 4] * 4
    with torch.no_grad(), TokenRecorder(loose) as recorder:
        loose(video)
    assert recorder.clip_tokens_per_block == [(64 - 6 * b, ) * 4
                                              for b in range(4)]


def test_packed_spends_only_each_clips_flops():
    video = clips_of_different_redundancy()
    packed, padded = build(), build(packed=False)
    with torch.no_grad():
        alone = sum(count_gflops(lambda c=c: packed(c[None])) for c in video)
        packed_flops = count_gflops(lambda: packed(video))
        padded_flops = count_gflops(lambda: padded(video))
    assert packed_flops == pytest.approx(alone, rel=1e-6)
    assert packed_flops < padded_flops


def test_packed_and_padded_agree():
    video = clips_of_different_redundancy()
    with torch.no_grad():
        torch.testing.assert_close(build()(video), build(packed=False)(video),
                                   rtol=1e-5, atol=1e-5)


def test_packed_backbone_compiles_and_matches_eager():
    model = build(dict(type='ToMe', r=6, threshold=0.2))
    video = clips_of_different_redundancy()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(video), model(video), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize('kernel', [kernel_param(k) for k in KERNELS])
def test_every_kernel_runs_the_backbone(kernel):
    model = build(dict(type='ToMe', r=6), proportional_attention=True)
    video = clips_of_different_redundancy()
    with torch.no_grad():
        expected = torch.cat([model(clip[None]) for clip in video])
        with packed_kernel_set_to(kernel):
            got = model(video)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_switch_is_checked_and_reducers_that_need_packing_say_so():
    with pytest.raises(ValueError, match='packed must be True or False'):
        build(packed='yes')
    with pytest.raises(ValueError, match='set token_reduction.packed=True'):
        build(dict(type='ToMe', r=6, threshold=0.2), packed=False)
    with pytest.raises(ValueError, match='ToMe threshold'):
        build(dict(type='ToMe', r=6, threshold=1.5))
    # Padded, a reducer without padding support still cannot follow.
    with pytest.raises(ValueError, match='cannot follow'):
        build(dict(type='PPT', blocks=(1, ), r=3), packed=False)
