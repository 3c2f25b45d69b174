"""Token reduction for timm's image ViTs, patched in ToMe's manner.

:func:`apply_token_reduction` turns a timm ``VisionTransformer`` (ViT, DeiT,
DeiT distilled, with register tokens or not) into one whose blocks and input
run the reducers of :mod:`mmtokred.reducers`, the VideoMAE backbone's: an
image is a clip of one frame, and the prefix tokens (class, distillation,
registers) are the reducers' ``prefix``, never merged or pruned; where
an input stage keeps a token count per image (NEPAM's threshold), the batch
is padded as the VideoMAE backbone pads it. With
``token_reduction=None`` the outputs equal timm's on the same weights.

``token_reduction`` takes the keys of the VideoMAE backbone's
(``input``, ``blocks``, ``proportional_attention``, ``track_source``); the
papers' own image settings are in :data:`PAPER_SETTINGS`.
"""
import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from ..ops import TokenState, attention, weighted_mean
from ..ops.checks import check_choice
from ..ops.linear import linear_module
from ..reducers import AttentionInputs, BlockReducer, build_token_reduction

#: PPT's choices in xjwu1024/PPT ppt_deit.py (``pp_block_adaptive``):
#: importance from the class token, ``torch.var`` of it as the statistic,
#: pruned tokens dropped and the kept ones in order of importance.
OFFICIAL_PPT = dict(importance='class_token', rule='paper', keep_mean='drop',
                    kept_order='importance')

#: The methods as their papers ran them on images (DeiT-S at 224 unless
#: named otherwise), for :func:`apply_token_reduction`.
PAPER_SETTINGS: Dict[str, Dict] = {
    # xjwu1024/PPT README: --r_tokens 50 --pp_loc_list 3 6 9
    # --threshold 7e-5 (DeiT-S: 2.94 GMACs, 79.50 top-1 off the shelf);
    # its pp_block_adaptive.forward takes r = min(r, (N - 1) // 2), so
    # block 9 removes 48 (197 -> 147 -> 97 -> 49); proportional attention
    # on (main.py --prop_attn, store_false), as in its ToMe-derived blocks.
    # The official score, rule and pruning: the class token's attention
    # times ||v|| (OFFICIAL_PPT), its torch.var against the threshold, the
    # kept tokens in order of importance.
    'ppt-deit-s': dict(blocks=dict(type='PPT', blocks=(3, 6, 9),
                                   r=(50, 50, 48), threshold=7e-5,
                                   **OFFICIAL_PPT),
                       proportional_attention=True),
    # JackJiang2018/NEPAM val.sh / ben.sh: deit_small_patch16_224_ablation,
    # merge_group_size 1 2, merge_group_num 39 (of 98 windows at 224),
    # token_pos 0 1 (the second patch of each window kept), keep1,
    # distance cosine: model_nepam.py's NepamAblation.CosSim returns
    # -F.cosine_similarity ("turn similarity into distance") and SortIndex
    # merges the lowest scores, the most similar windows.
    'nepam-deit-s': dict(input=dict(type='NEPAM', window=(1, 2),
                                    num_windows=39, distance='cosine',
                                    keep=1)),
    # ViT-B/16-384 (24x24 patches, 288 windows of 1x2): the paper reports
    # +25% speed and -0.07 top-1 but not its count. Half the windows (577
    # -> 433 tokens, 0.73 of the FLOPs) gives that speed on CPU here; DeiT-S's
    # share (39/98) gave 0.78 of the FLOPs and 1.23-1.25x. The l1 distance is
    # the official code's default ('manhattan').
    'nepam-vit-b16-384': dict(input=dict(type='NEPAM', window=(1, 2),
                                         ratio=0.5, distance='l1', keep=1)),
    # JMP's published DeiT-S figure is -35% FLOPs: PPT's placement and
    # budget, the class token's importance.
    'jmp-deit-s': dict(blocks=dict(type='JMP', blocks=(3, 6, 9), r=50,
                                   threshold=0.5, importance='class_token'),
                       proportional_attention=True),
    'patchsim-deit-s': dict(input=dict(type='PatchSimilarityPruning',
                                       ratio=0.3, threshold=0.5)),
}


# --------------------------------------------------------------------------
# The patch
# --------------------------------------------------------------------------
class ReducingAttention(Attention):
    """timm's ``Attention`` through :func:`mmtokred.ops.attention`, with a
    key bias and its q, k, v handed to the block's reducer."""

    def forward(self, x: Tensor, key_bias: Optional[Tensor] = None
                ) -> Tuple[Tensor, AttentionInputs]:
        B, N, _ = x.shape
        gate = getattr(self, 'gate', None)
        gate = gate(x).sigmoid() if gate is not None else None
        head_dim = getattr(self, 'head_dim', None) or self.qkv.out_features \
            // 3 // self.num_heads
        qkv = linear_module(self.qkv, x).reshape(
            B, N, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = attention(q, k, v, self.scale, key_bias,
                        self.attn_drop.p if self.training else 0.)
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * head_dim)
        out = self.norm(out) if hasattr(self, 'norm') else out
        if gate is not None:
            out = out * gate
        out = self.proj_drop(linear_module(self.proj, out))
        return out, AttentionInputs(q, k, v, self.scale, key_bias)


class ReducingBlock(Block):
    """timm's pre-norm ``Block`` with a token reducer before the MLP."""

    def forward(self, x: Tensor, state: TokenState,
                reducer: Optional[BlockReducer] = None, block_index: int = 0,
                proportional_attention: bool = False
                ) -> Tuple[Tensor, TokenState]:
        key_bias = state.key_bias(proportional_attention)
        out, inputs = self.attn(self.norm1(x), key_bias)
        x = x + self.drop_path1(self.ls1(out))
        if reducer is not None:
            x, state = reducer(x, inputs, state, block_index)
        del inputs
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))), state


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError('apply_token_reduction patches timm VisionTransformer '
                        f'models (ViT, DeiT), got {type(model).__name__}')
    unsupported = [
        name for name, bad in (
            ('dynamic_img_size', getattr(model, 'dynamic_img_size', False)),
            ('attn_pool (global_pool="map")', model.attn_pool is not None),
            ('a patch-embedding norm', not isinstance(
                model.patch_embed.norm, nn.Identity)),
        ) if bad
    ]
    unsupported += [f'block {i} ({type(b).__name__})'
                    for i, b in enumerate(model.blocks)
                    if type(b) not in (Block, ReducingBlock)
                    or type(b.attn) not in (Attention, ReducingAttention)]
    if unsupported:
        raise ValueError('apply_token_reduction supports the standard timm '
                         'ViT blocks only; this model has '
                         + ', '.join(unsupported))


def apply_token_reduction(model: nn.Module,
                          token_reduction: Optional[Union[Dict, str]] = None
                          ) -> nn.Module:
    """Patch a timm ``VisionTransformer`` in place to reduce tokens.

    Args:
        model: a timm ViT or DeiT (distilled included).
        token_reduction: ``dict(input=..., blocks=...,
            proportional_attention=False, track_source=False)`` (reducers of
            :mod:`mmtokred.reducers` by ``type``), a name of
            :data:`PAPER_SETTINGS`, or None: no reduction (outputs equal
            timm's).

    Returns:
        The model (its class replaced by a subclass; weights untouched).
    """
    _check_model(model)
    if isinstance(token_reduction, str):
        check_choice('token_reduction', token_reduction, tuple(PAPER_SETTINGS))
        token_reduction = PAPER_SETTINGS[token_reduction]
    prefix = model.num_prefix_tokens
    reduction = build_token_reduction(token_reduction, len(model.blocks),
                                      prefix, packing=False)
    # An image is a clip of one frame: the token grid is (1, H', W').
    plan = reduction.plan((1, *model.patch_embed.grid_size),
                          len(model.blocks), prefix)
    if plan.caps:
        raise reduction.budget_error(
            plan, f'({prefix} prefix tokens included)')

    for block in model.blocks:
        block.__class__ = ReducingBlock
        block.attn.__class__ = ReducingAttention
    if not isinstance(model, TokenReductionMixin):
        model.__class__ = type(f'TokenReduction{type(model).__name__}',
                               (TokenReductionMixin, type(model)), {})
    model.token_reduction = reduction.to(
        next(model.parameters()).device)
    return model


def _with_prefix(state: TokenState, tokens: Tensor,
                 prefix: int) -> TokenState:
    """The state of ``prefix`` tokens (one patch each, holding no input
    patch: source columns are the prefix's, then the patches') followed by
    ``tokens`` of ``state``."""
    if state.size is None and state.source is None:
        return state
    sizes = state.sizes_like(tokens)
    size = torch.cat([sizes.new_ones(sizes.shape[0], prefix, 1), sizes], 1)
    source = None
    if state.source is not None:
        eye = torch.eye(prefix, dtype=state.source.dtype,
                        device=tokens.device).expand(tokens.shape[0], -1, -1)
        source = torch.cat([F.pad(eye, (0, state.source.shape[-1])),
                            F.pad(state.source, (prefix, 0))], 1)
    return TokenState(size=size, source=source, padded=state.padded)


class TokenReductionMixin:
    """The forward pass of a patched timm ViT: the input stage, the blocks
    with their reducer, and size-weighted average pooling."""

    def forward_tokens(self, x: Tensor) -> Tuple[Tensor, TokenState]:
        """Tokens after the final norm ``(B, N', C)`` and their state."""
        prefix = self.num_prefix_tokens
        reduction = self.token_reduction
        if reduction.input is None:
            x = self._pos_embed(self.patch_embed(x))
            state = TokenState()
        else:
            tokens, state = reduction.input(
                x[:, :, None], self.patch_embed.proj, self.pos_embed,
                reduction.track_source)
            # The prefix tokens (class, distillation, registers) as the
            # model's own _pos_embed makes them, from one dummy image.
            dummy = self.pos_embed.new_zeros(
                1, math.prod(self.patch_embed.grid_size), tokens.shape[-1])
            prefix_x = self._pos_embed(dummy)[:, :prefix].to(tokens.dtype)
            x = torch.cat([prefix_x.expand(tokens.shape[0], -1, -1),
                           self.pos_drop(tokens)], 1)
            state = _with_prefix(state, tokens, prefix)
        if reduction.track_source and state.source is None:
            state.source = torch.eye(x.shape[1], device=x.device,
                                     dtype=x.dtype).expand(x.shape[0], -1, -1)
        x = self.norm_pre(self.patch_drop(x))
        for index, block in enumerate(self.blocks):
            x, state = block(
                x, state, reducer=reduction.blocks, block_index=index,
                proportional_attention=reduction.proportional_attention)
        return self.norm(x), state

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        x, state = self.forward_tokens(x)
        if self.global_pool == 'avg' and state.size is not None:
            # Merged tokens stand for several patches: weigh them so.
            prefix = self.num_prefix_tokens
            pooled = weighted_mean(x[:, prefix:], state.size[:, prefix:])
            return self.head(self.head_drop(self.fc_norm(pooled)))
        return self.forward_head(x)


__all__ = ['apply_token_reduction', 'OFFICIAL_PPT', 'PAPER_SETTINGS',
           'TokenReductionMixin']
