"""PPT, JMP and patch-similarity pruning: ops and backbone."""
import pytest
import torch
import torch.nn.functional as F
from mmaction.registry import MODELS

from mmtokred.measure.observe import TokenRecorder
from mmtokred.reducers import PPT, AttentionInputs
from mmtokred.ops import (TokenState, activation_norm_importance,
                          attention_sharpness_importance, concentration,
                          joint_merge_prune, merge_in_rounds, prune,
                          pooled_query_importance, random_importance,
                          received_attention_importance,
                          similarity_prune_index)

SMALL = dict(type='TokenReductionVisionTransformer', img_size=64,
             patch_size=16, embed_dims=48, depth=4, num_heads=4, num_frames=8)
REDUCERS = {
    'ppt': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(10, 8))),
    'ppt_received_drop': dict(blocks=dict(type='PPT', blocks=(1, ), r=12,
                                          importance='received',
                                          keep_mean='drop')),
    'ppt_many': dict(blocks=dict(type='PPT', blocks=(1, ), r=40,
                                 importance='sharpness', threshold=0.)),
    'jmp': dict(blocks=dict(type='JMP', blocks=(1, 2), r=(10, 8),
                            threshold=0.2)),
    'jmp_many': dict(blocks=dict(type='JMP', blocks=(1, ), r=40,
                                 importance='norm')),
    'pruning': dict(blocks=dict(type='TokenPruning', blocks=(1, 2),
                                r=(10, 8), importance='random')),
    'patchsim': dict(input=dict(type='PatchSimilarityPruning', ratio=0.4)),
    'progressive': dict(blocks=dict(type='SimilarityPruning', blocks=(1, 2),
                                    r=10)),
    'nepam_jmp': dict(input=dict(type='NEPAM', ratio=0.5),
                      blocks=dict(type='JMP', blocks=(1, ), r=10)),
}


def build(token_reduction=None):
    torch.manual_seed(0)
    return MODELS.build(dict(SMALL, token_reduction=token_reduction)).eval()


def clips(batch=3):
    video = torch.randn(batch, 3, 8, 64, 64,
                        generator=torch.Generator().manual_seed(1))
    video[0, :, :, :32] = 0.3
    return video


def run(model, video):
    with torch.no_grad():
        return model(video)


# --- importance and the PPT statistic -------------------------------------
def test_pooled_query_importance_is_the_mean_query_attention():
    q, k, v = torch.randn(3, 2, 4, 12, 8).unbind(0)
    got = pooled_query_importance(q, k, v, 0.35)
    attention = (q.mean(2, keepdim=True) @ k.transpose(-2, -1) *
                 0.35).softmax(-1).squeeze(2).sum(1)
    expected = attention * v.transpose(1, 2).flatten(2).norm(dim=-1)
    torch.testing.assert_close(got, expected / expected.sum(1, keepdim=True))


def test_received_attention_importance_uses_the_full_matrix():
    q, k, v = torch.randn(3, 2, 4, 12, 8).unbind(0)
    got = received_attention_importance(q, k, v, 0.35)
    matrix = F.softmax(q @ k.transpose(-2, -1) * 0.35, -1)
    expected = matrix.mean(2).sum(1) * v.transpose(1, 2).flatten(2).norm(
        dim=-1)
    torch.testing.assert_close(got, expected / expected.sum(1, keepdim=True))


def test_concentration_is_independent_of_the_token_count():
    scores = torch.tensor([[4., 1., 1., 2.]])
    tiled = scores.repeat(1, 8)
    value = concentration(scores / scores.sum())
    torch.testing.assert_close(concentration(tiled / tiled.sum()), value)
    assert concentration(torch.full((1, 50), 0.02)).item() == pytest.approx(
        0, abs=1e-9)


def attention_inputs(concentrated: bool, n=16, batch=1):
    """Keys equal (even attention) or one key aligned with the queries."""
    q = torch.ones(batch, 2, n, 8)
    k = torch.zeros(batch, 2, n, 8)
    if concentrated:
        k[:, :, 5] = 3.
    v = torch.ones(batch, 2, n, 8)
    return AttentionInputs(q, k + 0.01 * torch.randn(k.shape), v, 1., None)


@pytest.mark.parametrize('concentrated, branch', [(False, 'pool'),
                                                  (True, 'prune')])
def test_ppt_branch_follows_the_statistic(concentrated, branch):
    ppt = PPT(blocks=(0, ), r=4, threshold=2.69, keep_mean='drop')
    ppt.bind(1)
    x = torch.randn(1, 16, 6)
    out, state = ppt(x, attention_inputs(concentrated), TokenState(), 0)
    assert out.shape == (1, 12, 6)
    assert ppt.branch_counts() == {branch: 1, ({'pool', 'prune'} -
                                               {branch}).pop(): 0}
    if branch == 'prune':
        # The one important token survives untouched, every size is 1.
        assert any(torch.equal(out[0, i], x[0, 5]) for i in range(12))
        assert torch.equal(state.size, torch.ones(1, 12, 1))
    else:
        assert state.size.sum() == 16 and state.size.max() > 1


def test_ppt_decides_per_clip():
    ppt = PPT(blocks=(0, ), r=4)
    ppt.bind(1)
    even, peaked = attention_inputs(False), attention_inputs(True)
    both = AttentionInputs(*(torch.cat([a, b]) for a, b in zip(
        (even.q, even.k, even.v), (peaked.q, peaked.k, peaked.v))), 1., None)
    ppt(torch.randn(2, 16, 6), both, TokenState(), 0)
    assert ppt.branch_counts() == {'pool': 1, 'prune': 1}


# --- importance scores ----------------------------------------------------
def test_norm_and_sharpness_scores():
    x = torch.tensor([[[1., -2.], [0., 0.5], [3., 0.]]])
    torch.testing.assert_close(activation_norm_importance(x),
                               torch.tensor([[3., 0.5, 3.]]) / 6.5)
    q, k = torch.randn(2, 2, 3, 5, 4).unbind(0)
    matrix = (q @ k.transpose(-2, -1) * 0.5).softmax(-1)
    entropy = -(matrix * matrix.log()).sum(-1).mean(1)
    expected = torch.log(torch.tensor(5.)) - entropy
    torch.testing.assert_close(attention_sharpness_importance(q, k, 0.5),
                               expected / expected.sum(1, keepdim=True))


def test_random_score_is_seeded_and_batch_invariant():
    x = torch.randn(4, 30, 8)
    a, b = random_importance(x, 3), random_importance(x, 3)
    assert torch.equal(a, b) and not torch.equal(a, random_importance(x, 4))
    assert torch.equal(random_importance(x[2:3], 3), a[2:3])
    torch.testing.assert_close(a.sum(1), torch.ones(4))
    assert len(set(a[0].tolist())) == 30  # no ties


# --- pruning that keeps the pooled mean -----------------------------------
@pytest.mark.parametrize('keep_mean', ['fuse', 'nearest'])
def test_mean_preserving_pruning_keeps_the_size_weighted_mean(keep_mean):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 5, generator=generator, dtype=torch.float64)
    size = torch.randint(1, 4, (2, 12, 1), generator=generator).double()
    state = TokenState(size=size)
    order = torch.rand(2, 12, generator=generator).argsort(1)
    out, out_state = prune(x, state, order, 7, keep_mean, x)
    assert out.shape == (2, 7, 5)
    torch.testing.assert_close(out_state.pool(out), state.pool(x),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(out_state.size.sum(1).double(), size.sum(1))


def test_drop_keeps_the_first_of_the_order_and_fuse_adds_one_token():
    x = torch.arange(6.).view(1, 6, 1)
    order = torch.tensor([[4, 1, 0, 5, 2, 3]])
    out, state = prune(x, TokenState(source=torch.eye(6)[None]), order, 3)
    assert out.flatten().tolist() == [0., 1., 4.]
    out, state = prune(x, TokenState(source=torch.eye(6)[None]), order, 3,
                       'fuse')
    assert out.flatten().tolist() == [1., 4., 2.5]  # mean of 0, 5, 2, 3
    assert state.size.flatten().tolist() == [1., 1., 4.]
    assert state.source[0, 2].sum() == 0  # the fused token is no place
    with pytest.raises(ValueError, match='keep_mean'):
        prune(x, TokenState(), order, 3, 'average')
    with pytest.raises(ValueError, match='keep must be'):
        prune(x, TokenState(), order, 1, 'fuse')


# --- JMP ----------------------------------------------------------------
def test_jmp_merges_similar_and_prunes_unimportant_dissimilar_tokens():
    # A tokens 0, 2, 4; B tokens 1, 3, 5. Token 2 copies token 3; token 4 is
    # unlike every B token and the least important; token 0 matters most.
    metric = torch.eye(6)[None].clone()
    metric[0, 2] = metric[0, 3]
    x = torch.arange(6.).view(1, 6, 1)
    importance = torch.tensor([[6., 5., 4., 3., 0.5, 1.]])
    state = TokenState(source=torch.eye(6)[None])
    out, state, merged = joint_merge_prune(x, metric, state, importance, r=2,
                                           threshold=0.9)
    # Token 2 (similar: key 1 + 1 - 0.6) leaves first and is merged into 3;
    # token 4 (unimportant: key 0 + 1 - 0) leaves and is pruned.
    assert merged.tolist() == [[True, False]]
    assert out.flatten().tolist() == [0., 1., 2.5, 5.]
    assert state.size.flatten().tolist() == [1., 1., 2., 1.]
    assert torch.equal(state.source.sum(2, keepdim=True), state.size)
    assert state.source.sum(1)[0, 4] == 0  # pruned: held by no token


def test_jmp_rejects_bad_budgets():
    x = torch.randn(1, 5, 3)
    with pytest.raises(ValueError, match='r must be'):
        joint_merge_prune(x, x, TokenState(), torch.rand(1, 5), 3, 0.5)
    with pytest.raises(ValueError, match='threshold'):
        joint_merge_prune(x, x, TokenState(), torch.rand(1, 5), 2, 1.5)


@pytest.mark.parametrize('kind', ['PPT', 'JMP', 'TokenPruning',
                                  'SimilarityPruning'])
def test_default_blocks_on_a_shallow_model_say_they_are_vit_b(kind):
    """A bare ``dict(type=...)`` has ViT-B's 12-block schedule: on a 4-block
    model the error names the option, says whose defaults these are and
    suggests blocks that exist."""
    with pytest.raises(ValueError) as error:
        MODELS.build(dict(SMALL, token_reduction=dict(blocks=dict(type=kind))))
    message = str(error.value)
    assert f'{kind} blocks [4, 5, 6, 7, 8, 9, 10] do not exist' in message
    assert "ViT-B 16x224's (12 blocks, 1568 tokens)" in message
    assert f'Give {kind} blocks and r' in message
    assert 'blocks=(1, 2)' in message
    with pytest.raises(ValueError) as error:  # not the defaults: no ViT-B
        MODELS.build(dict(SMALL, token_reduction=dict(
            blocks=dict(type=kind, blocks=(1, 5), r=4))))
    assert 'blocks [5] do not exist' in str(error.value)
    assert 'ViT-B' not in str(error.value)


def test_merging_in_rounds_removes_more_than_half():
    x = torch.randn(2, 10, 4)
    out, state = merge_in_rounds(x, x, TokenState(), 8)
    assert out.shape == (2, 2, 4) and state.size.sum(1).flatten().tolist(
    ) == [10., 10.]
    torch.testing.assert_close(state.pool(out), x.mean(1))


# --- patch-similarity pruning --------------------------------------------
def test_similarity_pruning_keeps_a_member_of_every_cluster():
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(3, 16, generator=generator), dim=-1)
    sizes = [8, 5, 2]  # three clusters of near-copies
    members = torch.cat([
        c + 0.01 * torch.randn(n, 16, generator=generator)
        for c, n in zip(centres, sizes)
    ])
    loners = torch.randn(4, 16, generator=generator)
    features = torch.cat([members, loners])[None]
    order, fallbacks = similarity_prune_index(features, 12, threshold=0.9)
    kept = set(order[0, :7].tolist())
    assert order.shape == (1, 19) and fallbacks.item() == 0
    starts = [0, 8, 13]
    for start, n in zip(starts, sizes):
        assert kept & set(range(start, start + n))  # one member stays
    assert set(range(15, 19)) <= kept  # unique tokens are not redundant


def test_similarity_pruning_reports_fallbacks():
    features = torch.eye(6)[None]  # nothing is similar to anything
    order, fallbacks = similarity_prune_index(features, 2, threshold=0.5)
    assert order.shape == (1, 6) and fallbacks.item() == 2


# --- in the backbone -----------------------------------------------------
@pytest.mark.parametrize('reduction', [
    dict(blocks=dict(type='PPT', blocks=(1, ), r=0)),
    dict(blocks=dict(type='JMP', blocks=(1, 2), r=0)),
    dict(blocks=dict(type='TokenPruning', blocks=(1, 2), r=0)),
    dict(input=dict(type='PatchSimilarityPruning', ratio=0.)),
    dict(blocks=dict(type='SimilarityPruning', blocks=(0, ), r=0)),
])
def test_budget_zero_equals_dense(reduction):
    dense, reduced = build(), build(reduction)
    video = clips()
    assert torch.equal(run(reduced, video), run(dense, video))


@pytest.mark.parametrize('name', list(REDUCERS))
def test_batch_invariant_deterministic_and_consistent(name):
    model = build(dict(REDUCERS[name], track_source=True))
    video = clips()
    with TokenRecorder(model) as recorder:
        batched = run(model, video)
    assert torch.equal(batched, run(model, video))
    state = recorder.final_state
    # Mixed prune/merge: a token's size is the patches it holds; no patch is
    # held twice (pruned ones by none).
    size = state.size if state.size is not None else torch.ones(
        *state.source.shape[:2], 1)
    assert torch.equal(state.source.sum(2, keepdim=True), size)
    assert state.source.sum(1).max() <= 1
    for i in range(3):
        torch.testing.assert_close(run(model, video[i:i + 1]),
                                   batched[i:i + 1], rtol=1e-4, atol=1e-5)


def test_branch_counts_are_recorded():
    model = build(REDUCERS['ppt'])
    run(model, clips())
    counts = model.token_reduction.blocks.branch_counts()
    assert counts['pool'] + counts['prune'] == 3 * 2  # clips x blocks
    model.token_reduction.blocks.reset_counts()
    assert sum(model.token_reduction.blocks.branch_counts().values()) == 0


@pytest.mark.parametrize('reduction, field', [
    (dict(blocks=dict(type='PPT', blocks=(1, 9), r=3)), r'blocks \[9\]'),
    (dict(blocks=dict(type='PPT', blocks=(1, 2), r=(3, ))),
     'PPT r lists one count per block'),
    (dict(blocks=dict(type='PPT', threshold=-1.)), 'threshold'),
    (dict(blocks=dict(type='PPT', blocks=(1, ), r=3, importance='cls')),
     'importance'),
    (dict(blocks=dict(type='JMP', blocks=(1, ), r=3, threshold=2.)),
     'threshold'),
    (dict(blocks=dict(type='JMP', blocks=(), r=3)), 'blocks'),
    (dict(blocks=dict(type='PPT', blocks=(1, ), r=3, rule='cls')), 'rule'),
    (dict(blocks=dict(type='TokenPruning', blocks=(1, ), r=3,
                      keep_mean='mean')), 'keep_mean'),
    (dict(input=dict(type='PatchSimilarityPruning', keep_mean='fuse')),
     'keep_mean'),
    (dict(input=dict(type='PatchSimilarityPruning', ratio=1.)), 'ratio'),
    (dict(blocks=dict(type='SimilarityPruning', blocks=(1, ), r=-2)),
     'r must be'),
    (dict(input=dict(type='NEPAM', threshold=0.4),
          blocks=dict(type='PPT', blocks=(1, ), r=3), packed=False),
     'threshold mode'),
])
def test_bad_budgets_and_thresholds_raise(reduction, field):
    with pytest.raises(ValueError, match=field):
        build(reduction)


def test_ppt_paper_rule_is_the_plain_variance():
    ppt = PPT(blocks=(0, ), r=4, threshold=7e-5, rule='paper')
    ppt.bind(1)
    ppt.observing = True
    inputs = attention_inputs(True)
    ppt(torch.randn(1, 16, 6), inputs, TokenState(), 0)
    importance = received_attention_importance(inputs.q, inputs.k, inputs.v,
                                               1.)
    observed = ppt.observations()['statistic']
    torch.testing.assert_close(observed, importance.var(dim=1))
    assert ppt.branch_counts()['prune'] == int(observed.item() >= 7e-5)


def test_observations_are_kept_only_while_observing():
    ppt = PPT(blocks=(0, ), r=4)
    ppt.bind(1)
    ppt(torch.randn(2, 16, 6), attention_inputs(False, batch=2),
        TokenState(), 0)
    assert ppt.observations() == {}
    ppt.observing = True
    for _ in range(2):
        ppt(torch.randn(2, 16, 6), attention_inputs(False, batch=2),
            TokenState(), 0)
    assert ppt.observations()['statistic'].shape == (4, )
    ppt.reset_counts()
    assert ppt.observations() == {}


def test_block_placements_scale_with_depth():
    from mmtokred.reducers import (build_reducer, every_block,
                                   proportional_blocks)
    assert proportional_blocks(12) == [3, 6, 9]  # 4th, 7th, 10th blocks
    assert proportional_blocks(8) == [2, 4, 6]
    assert proportional_blocks(24) == [6, 12, 18]
    assert every_block(8) == [1, 2, 3, 4, 5, 6]
    for name in ('PPT', 'JMP', 'TokenPruning', 'SimilarityPruning'):
        reducer = build_reducer(dict(type=name))
        assert sorted(reducer.removals) == list(range(1, 11)), name
