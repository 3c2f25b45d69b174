"""A backbone written only as an adapter of :mod:`mmtokred.core` gets every
registered reducer, packing, proportional attention and the budget checks.

The tiny ViT below (conv patch embedding, learned position embedding, an
optional class token, plain pre-norm blocks) is the walk-through of
docs/core.md.
"""
from typing import Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtokred.core import (TokenReducingAttention, TokenReducingBackbone,
                           TokenReducingBlock, first_token, mean_pool)
from mmtokred.reducers import REDUCERS

IMAGE, PATCH, DIM, DEPTH, HEADS = 32, 4, 32, 3, 2


class TinyAttention(TokenReducingAttention):

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads)**-0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.)

    def qkv_heads(self, x):
        B, N, _ = x.shape
        return self.qkv(x).reshape(B, N, 3, self.num_heads,
                                   -1).permute(2, 0, 3, 1, 4).unbind(0)

    def project(self, out, x):
        return self.proj(out)


class TinyBlock(TokenReducingBlock):

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = TinyAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                 nn.Linear(2 * dim, dim))

    def attention_branch(self, x, key_bias, lengths):
        return self.attn(self.norm1(x), key_bias, lengths)

    def mlp_branch(self, x):
        return self.mlp(self.norm2(x))


class TinyViT(TokenReducingBackbone, nn.Module):

    def __init__(self, token_reduction: Optional[Dict] = None,
                 class_token: bool = True) -> None:
        nn.Module.__init__(self)
        grid = IMAGE // PATCH
        self.patch_projection = nn.Conv2d(3, DIM, PATCH, PATCH)
        self.num_prefix_tokens = int(class_token)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.pos_embed = nn.Parameter(
            torch.randn(1, self.num_prefix_tokens + grid * grid, DIM))
        self.blocks = nn.ModuleList(TinyBlock(DIM, HEADS)
                                    for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.configured_grid = (1, grid, grid)
        self.set_token_reduction(token_reduction)

    def token_grid(self, x):
        return (1, x.shape[2] // PATCH, x.shape[3] // PATCH)

    def clips(self, x):
        return x[:, :, None]

    def position_embedding(self, grid):
        return self.pos_embed

    def join_prefix(self, tokens):
        if not self.num_prefix_tokens:
            return tokens
        cls = self.cls_token + self.pos_embed[:, :1]
        return torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], 1)

    def embed(self, x, grid):
        tokens = self.patch_projection(x).flatten(2).transpose(1, 2)
        return self.join_prefix(
            tokens + self.pos_embed[:, self.num_prefix_tokens:])

    def forward(self, x):
        tokens, state = self.forward_tokens(x)
        if self.num_prefix_tokens:
            return first_token(tokens, state)
        return mean_pool(tokens, state)


def plain_forward(model: TinyViT, x: Tensor) -> Tensor:
    """The tiny ViT written plainly, without the core."""
    x = model.embed(x, model.configured_grid)
    for block in model.blocks:
        y = block.norm1(x)
        q, k, v = block.attn.qkv_heads(y)
        out = F.scaled_dot_product_attention(q, k, v,
                                             scale=block.attn.scale)
        x = x + block.attn.proj(out.transpose(1, 2).flatten(2))
        x = x + block.mlp(block.norm2(x))
    x = model.norm(x)
    return x[:, 0] if model.num_prefix_tokens else x.mean(1)


#: Every registered reducer, with a fixed budget and, where it has one,
#: in threshold mode (``threshold`` set: tokens per image).
CASES = {
    'NEPAM': dict(input=dict(type='NEPAM', window=(2, 2), num_windows=6)),
    'NEPAM-threshold': dict(input=dict(type='NEPAM', window=(2, 2),
                                       threshold=1.0)),
    'PatchSimilarityPruning': dict(input=dict(
        type='PatchSimilarityPruning', ratio=0.25)),
    'ToMe': dict(blocks=dict(type='ToMe', r=6)),
    'ToMe-threshold': dict(blocks=dict(type='ToMe', r=6, threshold=0.0)),
    'PPT': dict(blocks=dict(type='PPT', blocks=(1, ), r=12,
                            threshold=0.01)),
    'JMP': dict(blocks=dict(type='JMP', blocks=(1, ), r=12)),
    'TokenPruning': dict(blocks=dict(type='TokenPruning', blocks=(1, 2),
                                     r=8)),
    'SimilarityPruning': dict(blocks=dict(type='SimilarityPruning',
                                          blocks=(1, ), r=12)),
}
THRESHOLD = ('NEPAM-threshold', 'ToMe-threshold')


def build(reduction: Optional[Dict], class_token: bool = True) -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(reduction, class_token).eval()


def images(batch: int = 3) -> Tensor:
    return torch.randn(batch, 3, IMAGE, IMAGE,
                       generator=torch.Generator().manual_seed(1))


def tokens_per_block(model: TinyViT, x: Tensor) -> List[int]:
    seen = []
    hooks = [b.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[1]))
        for b in model.blocks]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_every_registered_reducer_is_covered():
    ours = {name for name, cls in REDUCERS.items()
            if cls.__module__.startswith('mmtokred.reducers')}
    assert {case['input' if 'input' in case else 'blocks']['type']
            for case in CASES.values()} == ours


@pytest.mark.parametrize('class_token', [True, False])
def test_without_reduction_it_is_the_plain_vit(class_token):
    model, x = build(None, class_token), images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain_forward(model, x),
                                   rtol=0, atol=0)


@pytest.mark.parametrize('class_token', [True, False])
@pytest.mark.parametrize('name', sorted(CASES))
def test_tokens_shrink_as_planned(name, class_token):
    model = build(CASES[name], class_token)
    prefix = model.num_prefix_tokens
    plan = model.token_reduction.plan(model.configured_grid, DEPTH, prefix)
    seen = tokens_per_block(model, images(1))
    if name in THRESHOLD:  # the plan is the most an image keeps
        assert all(n <= p for n, p in zip(seen, plan.tokens))
    else:
        assert seen == plan.tokens
    assert seen[-1] < model.configured_grid[1]**2 + prefix


@pytest.mark.parametrize('proportional', [False, True])
@pytest.mark.parametrize('packed', [True, False])
@pytest.mark.parametrize('class_token', [True, False])
@pytest.mark.parametrize('name', sorted(CASES))
def test_a_batch_equals_image_by_image(name, class_token, packed,
                                       proportional):
    reduction = dict(CASES[name], packed=packed, track_source=True,
                     proportional_attention=proportional)
    try:
        model = build(reduction, class_token)
    except ValueError as error:  # a padded batch this reducer refuses
        assert not packed and 'packed=True' in str(error)
        return
    x = images()
    with torch.no_grad():
        out = model(x)
        alone = torch.cat([model(clip[None]) for clip in x])
        tokens, state = model.forward_tokens(x)
    assert out.shape == (3, DIM)
    torch.testing.assert_close(out, alone, rtol=1e-4, atol=1e-5)
    if packed and model.token_reduction.runs_packed:
        assert state.lengths is not None and len(state.lengths) == 3
    assert state.source.shape[-1] == 64 + model.num_prefix_tokens


@pytest.mark.parametrize('name', sorted(CASES))
def test_an_over_budget_config_is_refused_at_build(name):
    stage, cfg = next(iter(CASES[name].items()))
    if stage == 'blocks':
        match = 'asks for more tokens than the blocks see'
        cfg = dict(cfg, r=1000)
    elif cfg['type'] == 'NEPAM':  # more windows than the grid has
        match = 'num_windows=1000 exceeds the 16 windows'
        cfg = dict(type='NEPAM', window=(2, 2), num_windows=1000)
    else:
        match = 'ratio must be'
        cfg = dict(cfg, ratio=1.5)
    with pytest.raises(ValueError, match=match):
        build({stage: cfg})
