"""NEPAM and ToMe in the backbone."""
import re
import warnings

import pytest
import torch
from mmaction.registry import MODELS

from mmtokred.measure.observe import ReducerTimer, TokenRecorder

SMALL = dict(type='TokenReductionVisionTransformer', img_size=64,
             patch_size=16, embed_dims=48, depth=3, num_heads=4, num_frames=8)
NEPAM = dict(type='NEPAM', window=(2, 2, 2), ratio=0.5)
TOME = dict(type='ToMe', r=10)


def build(token_reduction=None, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(
        dict(SMALL, token_reduction=token_reduction, **kwargs)).eval()


def clips(batch=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 3, 8, 64, 64, generator=generator)
    video[0, :, :, :32] = 0.3  # one clip with flat, static regions
    return video


def run(model, video):
    with torch.no_grad():
        return model(video)


def recorded(model, video):
    """The output, and what a TokenRecorder saw of the forward pass."""
    with TokenRecorder(model) as recorder:
        return run(model, video), recorder


@pytest.mark.parametrize('reduction', [
    dict(input=dict(NEPAM, ratio=0.)),
    dict(input=dict(NEPAM, ratio=None, num_windows=0)),
    dict(blocks=dict(TOME, r=0)),
    dict(input=dict(NEPAM, ratio=0.), blocks=dict(TOME, r=0)),
])
def test_reduction_off_equals_dense_exactly(reduction):
    dense, reduced = build(), build(reduction)
    reduced.load_state_dict(dense.state_dict())
    video = clips()
    out, recorder = recorded(reduced, video)
    assert torch.equal(out, run(dense, video))
    assert recorder.tokens_per_block == [64, 64, 64]


@pytest.mark.parametrize('reduction, tokens', [
    (dict(input=NEPAM), [36, 36, 36]),
    (dict(blocks=TOME), [64, 54, 44]),
    (dict(input=NEPAM, blocks=dict(TOME, r=8)), [36, 28, 20]),
    (dict(blocks=dict(TOME, r=[20, 5, 0])), [64, 44, 39]),
    (dict(blocks=dict(TOME, r=10, schedule='decreasing')), [64, 44, 34]),
])
def test_tokens_per_block_and_sizes(reduction, tokens):
    model = build(dict(reduction, track_source=True))
    out, recorder = recorded(model, clips())
    assert out.shape == (3, 48)
    assert recorder.tokens_per_block == tokens
    state = recorder.final_state
    assert torch.equal(state.size.sum(1).flatten(), torch.full((3, ), 64.))
    # Every input tubelet is held by exactly one token.
    assert torch.equal(state.source.sum(1), torch.ones(3, 64))
    assert torch.equal(state.source.sum(2, keepdim=True), state.size)


@pytest.mark.parametrize('reduction', [
    dict(input=NEPAM),
    dict(blocks=TOME),
    dict(input=NEPAM, blocks=dict(TOME, r=8), proportional_attention=True),
    dict(input=dict(NEPAM, ratio=None, threshold=0.6), blocks=TOME),
])
def test_batch_invariant_and_deterministic(reduction):
    model = build(reduction)
    video = clips()
    batched = run(model, video)
    assert torch.equal(batched, run(model, video))
    for i in range(3):
        torch.testing.assert_close(
            run(model, video[i:i + 1]), batched[i:i + 1], rtol=1e-4,
            atol=1e-5)


def test_threshold_mode_packs_or_pads_and_counts_differ():
    threshold = dict(NEPAM, ratio=None, threshold=0.6)
    video = clips()
    packed = build(dict(input=threshold))
    flat_clip = recorded(packed, video[:1])[1].tokens_per_block[0]
    busy_clip = recorded(packed, video[1:2])[1].tokens_per_block[0]
    assert flat_clip < busy_clip
    _, recorder = recorded(packed, video)
    lengths = (flat_clip, busy_clip, busy_clip)
    assert recorder.final_state.lengths == lengths
    assert recorder.clip_tokens_per_block == [lengths] * 3
    assert not recorder.final_state.padded
    padded = build(dict(input=threshold, packed=False))
    _, recorder = recorded(padded, video)
    assert recorder.final_state.padded and recorder.final_state.lengths is None
    assert recorder.tokens_per_block[0] == busy_clip
    assert recorder.clip_tokens_per_block[0] == (busy_clip, ) * 3


def test_proportional_attention_changes_merged_outputs_only():
    plain = build(dict(input=NEPAM))
    proportional = build(dict(input=NEPAM, proportional_attention=True))
    video = clips()
    assert not torch.allclose(run(plain, video), run(proportional, video))
    dense, dense_prop = build(), build(dict(proportional_attention=True))
    assert torch.equal(run(dense, video), run(dense_prop, video))


def test_reduction_times_are_recorded_and_hooks_removed():
    model = build(dict(input=NEPAM, blocks=dict(TOME, r=8)))
    with ReducerTimer(model) as timer:
        run(model, clips())
    assert timer.seconds['input'] > 0 and timer.seconds['blocks'] > 0
    assert 0 < timer.fraction < 1
    with TokenRecorder(model):
        pass
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize('reducer, field', [
    (dict(input=dict(NEPAM, ratio=1.5)), 'ratio'),
    (dict(input=dict(NEPAM, ratio=None, num_windows=-1)), 'num_windows'),
    (dict(input=dict(NEPAM, num_windows=3)), 'exactly one'),
    (dict(input=dict(NEPAM, window=(2, 0, 2))), 'window'),
    (dict(input=dict(NEPAM, distance='l3')), 'distance'),
    (dict(input=dict(NEPAM, position='first')), 'position'),
    (dict(blocks=dict(TOME, r=-1)), 'r must be'),
    (dict(blocks=dict(TOME, r=[1, 2])), '3 values'),
    (dict(blocks=dict(TOME, schedule='cosine')), 'schedule'),
    (dict(blocks=TOME, proportional_attention=1), 'proportional_attention'),
])
def test_bad_budgets_raise_at_build(reducer, field):
    with pytest.raises(ValueError, match=field):
        build(reducer)


def test_two_nepam_budgets_name_them_and_how_to_unset_one():
    """A shipped config (ratio) switched to a threshold by --cfg-options
    needs the ratio set to None: the error says so."""
    with pytest.raises(ValueError, match=re.escape(
            'got ratio=0.5, threshold=0.1; set the others to None')) as error:
        build(dict(input=dict(NEPAM, ratio=0.5, threshold=0.1)))
    assert 'model.backbone.token_reduction.input.ratio=None' in \
        str(error.value)


@pytest.mark.parametrize('reducer, field', [
    (dict(NEPAM, window=(5, 1, 1)), 'window'),
    (dict(NEPAM, ratio=None, num_windows=9), 'num_windows=9'),
])
def test_budgets_the_grid_cannot_serve_raise_at_build(reducer, field):
    with pytest.raises(ValueError, match=field):
        build(dict(input=reducer))


def test_budgets_other_clip_sizes_cannot_serve_raise_at_forward():
    model = build(dict(input=dict(NEPAM, window=(2, 4, 4))))  # fits 64 px
    with pytest.raises(ValueError, match=r'window \(2, 4, 4\)'):
        run(model, clips()[..., :32, :32])


@pytest.mark.parametrize('blocks, field', [
    (dict(TOME, r=10**6), 'ToMe .*block 0 sees 64 tokens.*not 1000000'),
    (dict(TOME, r=4, protected=100), 'can remove 0, not 4.*Lower r or '
     r'protected \(ToMe protected=100 keeps'),
    (dict(type='PPT', blocks=[1], r=1000), 'block 1 sees 64 .*not 1000'),
    (dict(type='JMP', blocks=[1], r=63), 'can remove 62, not 63'),
    (dict(type='SimilarityPruning', blocks=[2], r=64), 'remove 63, not 64'),
    (dict(type='TokenPruning', blocks=[1], r=63, keep_mean='fuse'),
     'can remove 62, not 63'),
])
def test_budgets_the_blocks_cannot_spend_raise_at_build(blocks, field):
    with pytest.raises(ValueError, match='token_reduction.blocks: .*' + field):
        build(dict(blocks=blocks))


def test_only_a_budget_bounded_by_protected_names_protected():
    with pytest.raises(ValueError) as error:
        build(dict(blocks=dict(TOME, r=10**6)))
    assert str(error.value).endswith('Lower r')


def test_budget_capped_on_other_clip_sizes_is_warned_once():
    model = build(dict(blocks=dict(TOME, r=12)))  # 64 tokens: spendable
    small = clips()[..., :32, :32]  # 16 tokens
    with pytest.warns(UserWarning, match='grid \\(4, 2, 2\\).*block 0 sees '
                      '16 tokens and can remove 8, not 12'):
        run(model, small)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        run(model, small)
    assert list(model.capped_budgets) == [(4, 2, 2)]


def test_empty_batch_is_refused_clearly():
    with pytest.raises(ValueError, match='B >= 1'):
        run(build(dict(input=NEPAM)), clips()[:0])


def test_feat_map_with_reduction_is_refused():
    with pytest.raises(ValueError, match='return_feat_map'):
        build(dict(input=NEPAM), return_feat_map=True)
