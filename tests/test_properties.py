"""Property tests: any model size, reducer, budget and batch either runs as
promised or is refused at build with a ValueError naming a field."""
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mmaction.registry import MODELS

from mmtokred.experiments.recipes import METHODS, Grid
from mmtokred.measure.observe import TokenRecorder
from mmtokred.reducers import build_reducer

#: Fields an error may name: every message must name one of them.
FIELDS = ('window', 'ratio', 'num_windows', 'threshold', 'distance',
          'representative', 'position', ' r ', ' r=', 'r must', 'r lists',
          'schedule', 'protected', 'blocks', 'importance', 'keep_mean',
          'rule', 'seed', 'token_reduction')

numbers = st.one_of(
    st.floats(-2, 2), st.integers(-3, 3),
    st.sampled_from([math.nan, math.inf, '0.5', None]))
counts = st.one_of(
    st.integers(-2, 80), st.sampled_from([1.5, '8', 10**6]),
    st.lists(st.integers(0, 20), min_size=1, max_size=4))
block_lists = st.one_of(
    st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
    st.sampled_from([[], [1.0], (0, 0)]))


@st.composite
def input_reducers(draw):
    kind = draw(st.sampled_from(['NEPAM', 'PatchSimilarityPruning']))
    if kind == 'PatchSimilarityPruning':
        return dict(type=kind, ratio=draw(numbers),
                    threshold=draw(st.one_of(st.none(), numbers)),
                    keep_mean=draw(st.sampled_from(['drop', 'nearest',
                                                    'fuse'])))
    budget = draw(st.sampled_from(['ratio', 'num_windows', 'threshold']))
    value = draw(counts if budget == 'num_windows' else numbers)
    return dict(
        type=kind,
        window=draw(st.one_of(
            st.tuples(*[st.integers(1, 3)] * 3),
            st.sampled_from([(2, 2), (0, 1, 1), (1, 9, 1)]))),
        distance=draw(st.sampled_from(['l1', 'l2', 'cosine'])),
        representative=draw(st.sampled_from(['keep1', 'avg'])),
        **{budget: value})


@st.composite
def block_reducers(draw):
    kind = draw(st.sampled_from(
        ['ToMe', 'PPT', 'JMP', 'TokenPruning', 'SimilarityPruning']))
    if kind == 'ToMe':
        return dict(type=kind, r=draw(counts),
                    schedule=draw(st.sampled_from(['constant', 'decreasing',
                                                   'cosine'])),
                    protected=draw(st.sampled_from([0, 0, 2, 100, -1])))
    cfg = dict(type=kind, blocks=draw(block_lists), r=draw(counts))
    if kind in ('PPT', 'JMP', 'SimilarityPruning'):
        cfg['threshold'] = draw(numbers)
    if kind == 'TokenPruning':
        cfg['keep_mean'] = draw(st.sampled_from(['drop', 'fuse', 'nearest']))
    return cfg


@st.composite
def models(draw):
    patch = draw(st.sampled_from([8, 16]))
    tubelet = draw(st.sampled_from([1, 2]))
    reduction = {}
    if draw(st.booleans()):
        reduction['input'] = draw(input_reducers())
    if draw(st.booleans()):
        reduction['blocks'] = draw(block_reducers())
    return dict(
        type='TokenReductionVisionTransformer',
        img_size=patch * draw(st.integers(1, 4)),
        patch_size=patch,
        embed_dims=16,
        depth=draw(st.integers(1, 4)),
        num_heads=2,
        num_frames=tubelet * draw(st.integers(1, 3)),
        tubelet_size=tubelet,
        token_reduction=reduction or None)


def drops_content(cfg) -> bool:
    """Whether removed tokens may take their patches with them: 'drop', and
    JMP, which prunes the tokens unlike any kept one."""
    reduction = cfg['token_reduction'] or {}
    return any(stage.get('keep_mean', 'nearest') == 'drop'
               or stage['type'] == 'JMP' for stage in reduction.values())


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cfg=models(), batch=st.integers(1, 3))
def test_any_config_runs_as_promised_or_is_refused_naming_a_field(cfg, batch):
    torch.manual_seed(0)  # each example its own, reproducible weights
    try:
        model = MODELS.build(cfg).eval()
    except ValueError as error:
        assert any(field in str(error) for field in FIELDS), str(error)
        event('refused at build')
        return
    event('built and ran')
    grid = model.configured_grid
    n = math.prod(grid)
    video = torch.randn(batch, 3, cfg['num_frames'], cfg['img_size'],
                        cfg['img_size'], generator=torch.Generator()
                        .manual_seed(0))
    with torch.no_grad(), TokenRecorder(model) as recorder:
        out = model(video)
    assert out.shape == (batch, cfg['embed_dims'])
    assert torch.isfinite(out).all()
    plan = model.token_reduction.plan(grid, cfg['depth'])
    assert not plan.caps
    adaptive = model.token_reduction.may_pad
    if adaptive:  # the plan is an upper bound
        assert all(seen <= planned for seen, planned in zip(
            recorder.tokens_per_block, plan.tokens))
    else:
        assert recorder.tokens_per_block == plan.tokens
    size = recorder.final_state.size  # None: no token merged
    if size is not None:
        total = size.float().sum((1, 2))
        if drops_content(cfg):
            assert (total <= n + 1e-3).all()
        else:
            torch.testing.assert_close(total, torch.full_like(total, n))
    with torch.no_grad():
        alone = model(video[-1:])
    torch.testing.assert_close(alone, out[-1:], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('field, value', [
    ('ratio', '0.5'), ('ratio', math.nan), ('num_windows', 2.0),
    ('threshold', math.nan), ('threshold', math.inf)])
def test_nepam_options_are_type_checked(field, value):
    with pytest.raises(ValueError, match=f'NEPAM {field}') as error:
        build_reducer(dict(type='NEPAM', **{field: value}))
    assert repr(value) in str(error.value)


@pytest.mark.parametrize('name', sorted(METHODS))
def test_every_sweep_recipe_spends_its_budget_at_every_knob(name):
    """The sweep's recipes ask only for what each block can remove, up to
    the most reduction (the backbone refuses more at build), and the model
    removes exactly that: the tokens entering each block are the plan's."""
    cfg = dict(type='TokenReductionVisionTransformer', img_size=64,
               patch_size=16, embed_dims=16, depth=4, num_heads=2,
               num_frames=8)  # 4 x 4 x 4 tokens
    video = torch.randn(1, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(0))
    for knob in (0., 0.3, 0.7, 1.):
        reduction = METHODS[name].make(knob, Grid(tokens=64, depth=4))
        model = MODELS.build(dict(cfg, token_reduction=reduction)).eval()
        plan = model.token_reduction.plan(model.configured_grid, 4)
        assert not plan.caps
        leaving = []
        hook = model.blocks[-1].register_forward_hook(
            lambda module, args, out: leaving.append(out[0].shape[1]))
        with torch.no_grad(), TokenRecorder(model) as recorder:
            model(video)
        hook.remove()
        assert recorder.tokens_per_block == plan.tokens, (knob, reduction)
        last = plan.tokens[-1]
        if model.token_reduction.blocks is not None:
            last -= model.token_reduction.blocks.removal(3, last)
        assert leaving == [last], (knob, reduction)
