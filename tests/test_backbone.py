"""The backbone against mmaction's stock VisionTransformer."""
from typing import Tuple

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import ConfigDict

from mmtokred.measure.observe import TokenRecorder
from mmtokred.reducers import BlockReducer, InputReducer, register
from mmtokred.ops import TokenState

SMALL = dict(img_size=64, patch_size=16, embed_dims=48, depth=2, num_heads=4,
             num_frames=4, tubelet_size=2)


def build_pair(**kwargs):
    cfg = {**SMALL, **kwargs}
    stock = MODELS.build(dict(type='VisionTransformer', **cfg)).eval()
    ours = MODELS.build(
        dict(type='TokenReductionVisionTransformer', **cfg)).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return stock, ours


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(use_mean_pooling=False),
    dict(init_values=0.1),
    dict(init_values=0.1, use_mean_pooling=False),
    dict(qkv_bias=False),
    dict(use_learnable_pos_emb=True),
])
@pytest.mark.parametrize('size', [(64, 64), (96, 80)])
def test_equals_stock(kwargs, size):
    stock, ours = build_pair(**kwargs)
    x = torch.randn(2, 3, 4, *size)
    with torch.no_grad():
        with TokenRecorder(ours) as recorder:
            expected, got = stock(x), ours(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4
    grid = (size[0] // 16) * (size[1] // 16) * 2
    assert recorder.tokens_per_block == [grid, grid]


def test_equals_stock_at_224():
    stock, ours = build_pair(img_size=224, embed_dims=32, num_heads=2,
                             depth=1, num_frames=2)
    x = torch.randn(1, 3, 2, 224, 224)
    with torch.no_grad():
        assert (ours(x) - stock(x)).abs().max() <= 1e-4


def test_return_feat_map_equals_stock():
    stock, ours = build_pair(return_feat_map=True)
    x = torch.randn(2, 3, 4, 64, 96)
    with torch.no_grad():
        expected, got = stock(x), ours(x)
    assert got.shape == (2, 48, 2, 4, 6)
    assert (got - expected).abs().max() <= 1e-4


def test_state_dict_keys_are_stock():
    stock, ours = build_pair(init_values=0.1)
    assert list(ours.state_dict()) == list(stock.state_dict())
    result = stock.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_training_mode_runs_backward():
    _, ours = build_pair(drop_path_rate=0.1, attn_drop_rate=0.1)
    ours.train()
    ours(torch.randn(2, 3, 4, 64, 64)).sum().backward()
    assert ours.blocks[0].attn.qkv.weight.grad is not None


def test_layer_decay_constructor_matches():
    # The constructor finds ViTs by 'VisionTransformer' in the class name.
    from mmaction.engine.optimizers import \
        LearningRateDecayOptimizerConstructor
    model = MODELS.build(
        dict(type='Recognizer3D',
             backbone=dict(type='TokenReductionVisionTransformer', **SMALL),
             cls_head=dict(type='TimeSformerHead', num_classes=3,
                           in_channels=48)))
    constructor = LearningRateDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
        dict(decay_rate=0.5, decay_type='layer_wise', num_layers=2))
    wrapper = constructor(model)
    rates = {group['lr'] for group in wrapper.optimizer.param_groups}
    assert len(rates) >= 3  # embedding, each block, head: decayed apart


@pytest.mark.parametrize('shape, message', [
    ((2, 3, 3, 64, 64), 'T=3'),
    ((2, 3, 6, 64, 64), 'num_frames=4'),
    ((2, 3, 4, 60, 64), 'H=60'),
    ((2, 3, 4, 64, 72), 'W=72'),
    ((2, 1, 4, 64, 64), 'in_channels=3'),
    ((3, 4, 64, 64), r'\(B, C, T, H, W\)'),
])
def test_bad_input_shapes_raise(shape, message):
    _, ours = build_pair()
    with pytest.raises(ValueError, match=message):
        ours(torch.randn(*shape))


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_frames=5), 'num_frames=5'),
    (dict(img_size=70), 'img_size=70'),
    (dict(embed_dims=50), 'num_heads=4'),
    (dict(tubelet_size=0), 'tubelet_size'),
    (dict(token_reduction=dict(middle=None)), 'unknown keys'),
    (dict(return_feat_map=True,
          token_reduction=dict(blocks=dict(type='MergeAdjacentPairs'))),
     'return_feat_map'),
])
def test_bad_build_args_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(
            dict(type='TokenReductionVisionTransformer', **{
                **SMALL,
                **kwargs
            }))


def test_reducer_of_the_wrong_kind_is_refused():
    with pytest.raises(TypeError, match='token_reduction.input'):
        MODELS.build(
            dict(type='TokenReductionVisionTransformer',
                 token_reduction=dict(input=dict(type='MergeAdjacentPairs')),
                 **SMALL))


# Two toy reducers that exercise the extension point.
@register
class KeepFirstTubelet(InputReducer):
    """Keeps only the tokens of the first tubelet in time."""

    def forward(self, video, projection, pos_embed, track_source):
        tokens = projection(video[:, :, :projection.kernel_size[0]])
        tokens = tokens.flatten(2).transpose(1, 2)
        n = tokens.shape[1]
        size = torch.full((video.shape[0], n, 1), pos_embed.shape[1] / n)
        return tokens + pos_embed[:, :n], TokenState(size=size)


@register
class MergeAdjacentPairs(BlockReducer):
    """Averages token pairs (2i, 2i+1) in block 0, tracking sizes."""

    def forward(self, x, attn, state, block_index
                ) -> Tuple[torch.Tensor, TokenState]:
        assert attn.metric.shape[:2] == x.shape[:2]
        if block_index != 0:
            return x, state
        size = state.size if state.size is not None else torch.ones_like(
            x[..., :1])
        weighted = (x * size).unflatten(1, (-1, 2)).sum(2)
        size = size.unflatten(1, (-1, 2)).sum(2)
        return weighted / size, TokenState(size=size)


def test_reducers_plug_in_and_pool_by_size():
    cfg = ConfigDict(type='TokenReductionVisionTransformer', **SMALL)
    dense = MODELS.build(cfg).eval()
    reduced = MODELS.build(
        dict(cfg,
             token_reduction=dict(
                 input=dict(type='KeepFirstTubelet'),
                 blocks=dict(type='MergeAdjacentPairs')))).eval()
    reduced.load_state_dict(dense.state_dict())
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad(), TokenRecorder(reduced) as recorder:
        out = reduced(x)
    assert out.shape == (2, 48)
    assert recorder.tokens_per_block == [16, 8]
    assert isinstance(reduced.token_reduction.input, KeepFirstTubelet)
    assert isinstance(reduced.token_reduction.blocks, MergeAdjacentPairs)


@register
class MergeFirstHalf(BlockReducer):
    """Merges the first half of the tokens into one token of that size."""

    def forward(self, x, attn, state, block_index):
        half = x.shape[1] // 2
        merged = x[:, :half].mean(1, keepdim=True)
        size = torch.ones_like(x[:, half - 1:, :1])
        size[:, 0] = half
        return torch.cat([merged, x[:, half:]], 1), TokenState(size=size)


def test_pooling_is_weighted_by_size():
    model = MODELS.build(
        dict(type='TokenReductionVisionTransformer',
             token_reduction=dict(blocks=dict(type='MergeFirstHalf')),
             **{**SMALL, 'depth': 1})).eval()
    seen = {}
    model.norm.register_forward_hook(
        lambda module, inputs, output: seen.update(tokens=output))
    model.fc_norm.register_forward_hook(
        lambda module, inputs, output: seen.update(pooled=inputs[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 4, 64, 64))
    tokens = seen['tokens']  # 1 token of size 16, then 16 of size 1
    assert tokens.shape[1] == 17
    expected = (tokens[:, 0] * 16 + tokens[:, 1:].sum(1)) / 32
    torch.testing.assert_close(seen['pooled'], expected)
    assert not torch.allclose(seen['pooled'], tokens.mean(1))
