"""The fast path: every fixed-budget reduction compiles into one graph with
no host sync (a sync or a data-dependent shape is a graph break), and every
method runs in bf16."""
import pytest
import torch

from conftest import FIXED_BUDGETS, THRESHOLD
from conftest import build_small as build


@pytest.mark.parametrize('name', list(FIXED_BUDGETS))
def test_compiles_to_one_graph_and_matches_eager(name):
    model = build(FIXED_BUDGETS[name])
    video = torch.randn(2, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    # fullgraph=True raises on any graph break (.item(), int() of a
    # tensor, nonzero, data-dependent branching).
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    with torch.no_grad():
        expected = model(video)
        got = compiled(video)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_threshold_mode_is_the_one_that_breaks():
    """NEPAM's threshold mode keeps a data-dependent number of tokens per
    clip: a batch of clips cannot be one graph (whether to pad or pack
    depends on the counts), and the test above would see that."""
    model = build(THRESHOLD)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend='eager')
    with torch.no_grad(), pytest.raises(Exception):
        compiled(torch.randn(2, 3, 8, 64, 64))


@pytest.mark.parametrize('name', list(FIXED_BUDGETS) + ['nepam_threshold'])
@pytest.mark.parametrize('cast', ['model', 'autocast'])
def test_bf16_outputs_finite_and_near_fp32(name, cast):
    reduction = FIXED_BUDGETS.get(name, THRESHOLD)
    model = build(reduction)
    video = torch.randn(2, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(video)
        if cast == 'model':
            got = model.to(torch.bfloat16)(video.to(torch.bfloat16))
            assert got.dtype == torch.bfloat16
        else:  # matrix products in bf16, norms (the output's) in fp32
            with torch.autocast('cpu', dtype=torch.bfloat16):
                got = model(video)
    assert torch.isfinite(got).all()
    similarity = torch.cosine_similarity(got.float(), expected, dim=-1)
    assert similarity.min() > 0.95, similarity
