"""Every method on a GPU (skipped without CUDA): the same outputs as on the
CPU in fp32, finite and agreeing with fp32 in fp16 and bf16, no host sync in
a fixed-budget forward pass, and one graph under ``torch.compile``. Packed
batches in half precision at head dims 12 and 64, every packed attention
kernel at ViT-B's shapes, and the host syncs they make, counted."""
import contextlib
import functools
from typing import Iterator, List, Optional, Tuple

import pytest
import torch
from mmaction.registry import MODELS
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import FIXED_BUDGETS, SMALL_BACKBONE, THRESHOLD, build_small
from mmtokred.measure.host_reads import CudaSyncs
from mmtokred.measure.observe import TokenRecorder
from mmtokred.ops.attention import attention
from mmtokred.ops.packed_attention import (packed_attention,
                                           packed_kernel_set_to)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason='needs a CUDA GPU')
DEVICE = torch.device('cuda')
METHODS = ['dense', *FIXED_BUDGETS, 'nepam_threshold']
#: Compiled with inductor (the others with aot_eager, which traces the same
#: whole graph on CUDA tensors without generating kernels, in seconds).
INDUCTOR = ('dense', 'nepam_ratio', 'tome', 'jmp')


def reduction(name: str):
    return None if name == 'dense' else FIXED_BUDGETS.get(name, THRESHOLD)


def clips(batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 64, 64,
                       generator=torch.Generator().manual_seed(1))


@contextlib.contextmanager
def exact_fp32():
    """fp32 products in fp32 on the GPU (no TF32), as on the CPU."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved


@pytest.mark.parametrize('name', METHODS)
def test_cuda_fp32_equals_cpu_fp32(name):
    model, video = build_small(reduction(name)), clips()
    with torch.no_grad(), exact_fp32():
        expected = model(video)
        got = model.to(DEVICE)(video.to(DEVICE)).cpu()
    difference = (got - expected).abs().max().item()
    assert difference < 1e-3, f'max |cuda - cpu| = {difference:.2e}'


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('cast', ['model', 'autocast'])
@pytest.mark.parametrize('name', METHODS)
def test_half_precision_is_finite_and_agrees_with_fp32(name, cast, dtype):
    model, video = build_small(reduction(name)).to(DEVICE), clips().to(DEVICE)
    with torch.no_grad():
        expected = model(video)
        if cast == 'model':
            got = model.to(dtype)(video.to(dtype))
            assert got.dtype == dtype
        else:
            with torch.autocast(DEVICE.type, dtype=dtype):
                got = model(video)
    assert torch.isfinite(got).all()
    similarity = torch.cosine_similarity(got.float(), expected, dim=-1)
    assert similarity.min() > 0.95, similarity
    agreement = (got.float().argmax(-1) == expected.argmax(-1)).float().mean()
    assert agreement >= 0.75, agreement


@pytest.mark.parametrize('name', ['dense', *FIXED_BUDGETS])
def test_fixed_budgets_never_wait_for_the_gpu(name):
    model, video = build_small(reduction(name)).to(DEVICE), clips().to(DEVICE)
    with torch.no_grad():
        model(video)  # allocations and kernel loading, before watching
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            model(video)
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_threshold_mode_is_the_one_that_waits():
    """NEPAM's threshold mode reads its token counts back (one sync per
    batch); the check above would see that."""
    model = build_small(THRESHOLD).to(DEVICE)
    video = clips().to(DEVICE)
    with torch.no_grad():
        model(video)
        torch.cuda.set_sync_debug_mode('error')
        try:
            with pytest.raises(RuntimeError):
                model(video)
        finally:
            torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize('name', ['dense', *FIXED_BUDGETS])
def test_compiles_to_one_graph_on_cuda(name):
    model, video = build_small(reduction(name)).to(DEVICE), clips().to(DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(
        model, fullgraph=True,
        backend='inductor' if name in INDUCTOR else 'aot_eager')
    with torch.no_grad(), exact_fp32():
        expected = model(video)
        got = compiled(video)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kernel', ['per_clip', 'nested', 'flex'])
@pytest.mark.parametrize('blocks', [None, dict(type='ToMe', r=6),
                                    dict(type='ToMe', r=6, threshold=0.2)])
def test_packed_batch_on_the_gpu_is_each_clip_alone(kernel, blocks):
    """Packed threshold batches on CUDA, each packed attention kernel:
    each clip's output as alone, in fp32."""
    from test_packed import clips_of_different_redundancy
    model = build_small(dict(THRESHOLD, blocks=blocks,
                             proportional_attention=True)).to(DEVICE)
    video = clips_of_different_redundancy().to(DEVICE)
    with exact_fp32(), torch.no_grad(), packed_kernel_set_to(kernel):
        batched = model(video)
        alone = torch.cat([model(clip[None]) for clip in video])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


#: The packed attention kernels ('auto' picks one of them).
KERNELS = ('per_clip', 'nested', 'varlen', 'flex')
HALF = (torch.float16, torch.bfloat16)
#: ToMe with a threshold: each clip its own count a block, packed.
TOME_THRESHOLD = dict(type='ToMe', r=6, threshold=0.2)
#: The small backbones by head dim: conftest's (12) and ViT-B's (64).
BACKBONES = {12: SMALL_BACKBONE,
             64: dict(SMALL_BACKBONE, embed_dims=128, num_heads=2)}
#: ViT-B's attention: 12 heads of 64; clips of odd, even and no tokens.
HEADS, HEAD_DIM = 12, 64
VIT_B_LENGTHS = (1449, 0, 783, 1568, 5)


def build_backbone(head_dim: int, blocks: Optional[dict]) -> torch.nn.Module:
    """The small backbone of ``head_dim`` with threshold NEPAM (and
    ``blocks``) and proportional attention, seeded, in eval mode."""
    torch.manual_seed(0)
    reduction = dict(THRESHOLD, blocks=blocks, proportional_attention=True)
    return MODELS.build(dict(BACKBONES[head_dim],
                             token_reduction=reduction)).eval()


def clips_of_graded_flatness(batch: int = 4) -> Tensor:
    """Noise clips, clip i flat over i of its 8 NEPAM windows (4 frames of
    32 x 32 pixels): threshold NEPAM keeps 64 - 7 i tokens, odd for odd i."""
    video = torch.randn(batch, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(0))
    for i in range(batch):
        for window in range(i):  # its (t, h, w): bits 2, 1 and 0
            t, h, w = window >> 2, window >> 1 & 1, window & 1
            video[i, :, 4 * t:4 * t + 4, 32 * h:32 * h + 32,
                  32 * w:32 * w + 32] = 0.1 * (window + 1)
    return video


def random_qkv(batch: int, tokens: int,
               dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """q, k, v ``(batch, 12, tokens, 64)`` and a log-size key bias
    ``(batch, tokens)`` on the GPU in ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, HEADS, tokens, HEAD_DIM,
                           generator=generator) for _ in range(3))
    bias = torch.rand(batch, tokens, generator=generator).mul(3).add(1).log()
    return tuple(t.to(DEVICE, dtype) for t in (q, k, v, bias))


@contextlib.contextmanager
def sync_debug_mode(mode: str) -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode(mode)`` inside, 0 again after."""
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def each_clip_alone(model: torch.nn.Module,
                    video: Tensor) -> Tuple[Tensor, List[List[int]]]:
    """The clips' outputs run one at a time, and their tokens per block."""
    outputs, tokens = [], []
    for clip in video:
        with TokenRecorder(model) as recorder:
            outputs.append(model(clip[None]))
        tokens += recorder.tokens_of_clips()
    return torch.cat(outputs), tokens


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('blocks', [None, TOME_THRESHOLD],
                         ids=['nepam', 'nepam_tome'])
@pytest.mark.parametrize('head_dim', sorted(BACKBONES))
def test_half_precision_packed_batch_is_each_clip_alone(
        head_dim, blocks, dtype, kernel):
    """Threshold NEPAM (and ToMe) packs clips of odd and even token counts;
    in fp16 and bf16, at head dims 12 and 64, every kernel gives each clip
    the tokens and (up to rounding) the output it gets alone."""
    model = build_backbone(head_dim, blocks).to(DEVICE, dtype)
    video = clips_of_graded_flatness().to(DEVICE, dtype)
    with torch.no_grad(), packed_kernel_set_to(kernel):
        with TokenRecorder(model) as recorder:
            packed = model(video)
        alone, alone_tokens = each_clip_alone(model, video)
    assert any(n % 2 for n in recorder.clip_tokens_per_block[0]), \
        recorder.clip_tokens_per_block[0]
    assert recorder.tokens_of_clips() == alone_tokens
    assert packed.dtype == dtype and torch.isfinite(packed).all()
    # Cosine, not elementwise: a near tie between ToMe's r-th and next
    # pair may break the other way in half precision (a different merge).
    similarity = torch.cosine_similarity(packed.float(), alone.float(), -1)
    assert similarity.min() > 0.999, similarity


@pytest.mark.parametrize('with_bias', [False, True],
                         ids=['no_bias', 'log_size_bias'])
@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('kernel', ['nested', 'varlen', 'flex'])
def test_packed_kernels_at_vit_b_shapes_equal_per_clip(
        kernel, dtype, with_bias):
    """12 heads of 64 over clips of 1449, 0, 783, 1568 and 5 tokens:
    each kernel gives per_clip's output in fp16 and bf16."""
    q, k, v, bias = random_qkv(1, sum(VIT_B_LENGTHS), dtype)
    bias = bias if with_bias else None
    run = functools.partial(packed_attention, q, k, v, HEAD_DIM**-0.5,
                            VIT_B_LENGTHS, bias)
    expected, got = run(kernel='per_clip'), run(kernel=kernel)
    assert got.shape == q.shape and got.dtype == dtype
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize('with_bias', [False, True],
                         ids=['no_bias', 'log_size_bias'])
@pytest.mark.parametrize('dtype', HALF, ids=str)
@pytest.mark.parametrize('tokens', [1568, 1449, 784])
def test_default_sdpa_backend_agrees_with_math(tokens, dtype, with_bias):
    """:func:`attention` through the SDPA backend torch picks (flash or
    memory-efficient, the bias as a channel) against the math backend."""
    q, k, v, bias = random_qkv(2, tokens, dtype)
    bias = bias if with_bias else None
    got = attention(q, k, v, HEAD_DIM**-0.5, bias)
    with sdpa_kernel(SDPBackend.MATH):
        expected = attention(q, k, v, HEAD_DIM**-0.5, bias)
    assert got.shape == q.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize('with_bias', [False, True],
                         ids=['no_bias', 'log_size_bias'])
@pytest.mark.parametrize('kernel', KERNELS)
def test_packed_attention_never_waits_for_the_gpu(kernel, with_bias):
    """No kernel reads the device: the lengths are host integers (after a
    first call, which compiles flex)."""
    q, k, v, bias = random_qkv(1, sum(VIT_B_LENGTHS), torch.float16)
    run = functools.partial(packed_attention, q, k, v, HEAD_DIM**-0.5,
                            VIT_B_LENGTHS, bias if with_bias else None,
                            kernel=kernel)
    run()
    torch.cuda.synchronize()
    with sync_debug_mode('error'):
        run()


@pytest.mark.parametrize('kernel', KERNELS)
def test_threshold_model_waits_once_a_block_at_most(kernel):
    """Threshold NEPAM then ToMe on 8 packed clips in fp16: one sync for
    NEPAM's counts and one a block for ToMe's, none in the kernels."""
    model = build_small(dict(THRESHOLD, blocks=TOME_THRESHOLD,
                             proportional_attention=True))
    model = model.to(DEVICE, torch.float16)
    video = clips_of_graded_flatness(batch=8).to(DEVICE, torch.float16)
    with torch.no_grad(), packed_kernel_set_to(kernel):
        model(video)  # compiles flex, loads kernels
        with CudaSyncs() as syncs:
            model(video)
    assert 1 <= syncs.count <= 1 + SMALL_BACKBONE['depth'], syncs.messages
