"""Every method on a GPU (skipped without CUDA): the same outputs as on the
CPU in fp32, finite and agreeing with fp32 in fp16 and bf16, no host sync in
a fixed-budget forward pass, and one graph under ``torch.compile``."""
import contextlib

import pytest
import torch

from conftest import FIXED_BUDGETS, THRESHOLD, build_small

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
    from mmtokred.ops.packed import packed_kernel_set_to
    from test_packed import clips_of_different_redundancy
    model = build_small(dict(THRESHOLD, blocks=blocks,
                             proportional_attention=True)).to(DEVICE)
    video = clips_of_different_redundancy().to(DEVICE)
    with exact_fp32(), torch.no_grad(), packed_kernel_set_to(kernel):
        batched = model(video)
        alone = torch.cat([model(clip[None]) for clip in video])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
