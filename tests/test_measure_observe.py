"""Observation from outside the model: hooks for tokens, time and branch
counts; the forward pass itself records nothing."""
import pytest
import torch
from mmaction.registry import MODELS

from mmtokred.measure.observe import ModuleTimer, TokenRecorder

SMALL = dict(type='TokenReductionVisionTransformer', img_size=64,
             patch_size=16, embed_dims=48, depth=4, num_heads=4, num_frames=8)


def build(token_reduction=None, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(SMALL, token_reduction=token_reduction,
                             **kwargs)).eval()


def clips(batch=3):
    video = torch.randn(batch, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(1))
    video[0, :, :, :32] = 0.3
    return video


# Branch counts of the seeded model and clips, pinned: how the reducers
# count (on the device) must not change what they decide.
PINNED_BRANCHES = [
    (dict(type='PPT', blocks=(1, 2), r=(10, 8)), {'pool': 6, 'prune': 0}),
    (dict(type='PPT', blocks=(1, ), r=40, importance='sharpness',
          threshold=0.), {'pool': 0, 'prune': 3}),
    (dict(type='JMP', blocks=(1, 2), r=(10, 8), threshold=0.2),
     {'merge': 54, 'prune': 0}),
    (dict(type='JMP', blocks=(1, ), r=40, importance='norm'),
     {'merge': 119, 'prune': 1}),
]


@pytest.mark.parametrize('blocks, counts', PINNED_BRANCHES)
def test_branch_counts_equal_those_before_the_change(blocks, counts):
    model = build(dict(blocks=blocks))
    with torch.no_grad():
        model(clips())
    reducer = model.token_reduction.blocks
    assert reducer.branch_counts() == counts
    assert reducer.branch_totals.device == model.pos_embed.device
    assert 'branch_totals' not in model.state_dict()  # checkpoints unchanged
    reducer.reset_counts()
    assert sum(reducer.branch_counts().values()) == 0


def test_patch_similarity_fallbacks_counted():
    model = build(dict(input=dict(type='PatchSimilarityPruning', ratio=0.4)))
    with torch.no_grad():
        model(clips())
    assert model.token_reduction.input.branch_counts() == {'fallback': 52}


def test_part_times_sum_to_the_forward_time():
    """Hook timings of the backbone's parts add up to the whole forward
    pass, less the few element-wise steps between them."""
    model = build(dict(input=dict(type='NEPAM', ratio=0.5),
                       blocks=dict(type='ToMe', r=4)), embed_dims=192,
                  num_heads=4)
    parts = dict(input=model.token_reduction.input, norm=model.norm,
                 fc_norm=model.fc_norm)
    parts.update({f'block {i}': b for i, b in enumerate(model.blocks)})
    video = clips(4)
    shares = []
    with torch.no_grad():
        model(video)  # warm-up
        for _ in range(5):
            with ModuleTimer(dict(backbone=model)) as whole, \
                    ModuleTimer(parts) as timer:
                model(video)
            total = whole.seconds['backbone']
            shares.append(sum(timer.seconds.values()) / total)
    assert all(share <= 1 for share in shares)
    assert max(shares) > 0.8, shares


def test_recorder_sees_every_block_and_hooks_are_removed():
    model = build(dict(blocks=dict(type='ToMe', r=5), track_source=True))
    with torch.no_grad(), TokenRecorder(model, states_of=[0]) as recorder:
        model(clips())
    assert recorder.tokens_per_block == [64, 59, 54, 49]
    assert recorder.input_state.source.shape == (3, 64, 64)
    assert recorder.block_states[0].source.shape == (3, 59, 64)
    assert recorder.final_state.source.shape == (3, 44, 64)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
