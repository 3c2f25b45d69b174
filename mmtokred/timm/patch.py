"""Token reduction for timm's image ViTs, patched in ToMe's manner.

:func:`apply_token_reduction` turns a timm ``VisionTransformer`` (ViT, DeiT,
DeiT distilled, with register tokens or not) into one whose blocks and input
run the reducers of :mod:`mmtokred.reducers`, the VideoMAE backbone's: an
image is a clip of one frame, and the prefix tokens (class, distillation,
registers) are the reducers' ``prefix``, never merged or pruned; where
the reducers keep a token count per image (NEPAM's or ToMe's threshold),
the batch runs packed as the VideoMAE backbone's does (both are adapters of
:mod:`mmtokred.core`). With ``token_reduction=None`` the outputs equal
timm's on the same weights.

``token_reduction`` takes the keys of the VideoMAE backbone's
(``input``, ``blocks``, ``proportional_attention``, ``track_source``,
``packed``); the papers' own image settings are in :data:`PAPER_SETTINGS`.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from ..core import (TokenReducingAttention, TokenReducingBackbone,
                    TokenReducingBlock, first_token, mean_pool)
from ..ops.checks import check_choice
from ..ops.linear import linear_module
from ..reducers import AttentionInputs, grid_of

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
# The patch: adapters of mmtokred.core
# --------------------------------------------------------------------------
class ReducingAttention(TokenReducingAttention, Attention):
    """timm's ``Attention`` (q/k norms, gate and output norm where set)
    through the core's attention."""

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        head_dim = getattr(self, 'head_dim', None) or self.qkv.out_features \
            // 3 // self.num_heads
        qkv = linear_module(self.qkv, x).reshape(
            B, N, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def project(self, out: Tensor, x: Tensor) -> Tensor:
        out = self.norm(out) if hasattr(self, 'norm') else out
        gate = getattr(self, 'gate', None)
        if gate is not None:
            out = out * gate(x).sigmoid()
        return self.proj_drop(linear_module(self.proj, out))


class ReducingBlock(TokenReducingBlock, Block):
    """timm's pre-norm ``Block`` with the core's reducer slot before the
    MLP."""

    def attention_branch(self, x: Tensor, key_bias: Optional[Tensor],
                         lengths: Optional[Sequence[int]]
                         ) -> Tuple[Tensor, AttentionInputs]:
        out, inputs = self.attn(self.norm1(x), key_bias, lengths)
        return self.drop_path1(self.ls1(out)), inputs

    def mlp_branch(self, x: Tensor) -> Tensor:
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


#: Pooling a packed batch can do: the size-weighted mean, the class token.
PACKED_POOLS = ('avg', 'token')


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
            proportional_attention=False, track_source=False, packed=True)``
            (reducers of :mod:`mmtokred.reducers` by ``type``), a name of
            :data:`PAPER_SETTINGS`, or None: no reduction (outputs equal
            timm's).

    Returns:
        The model (its class replaced by a subclass; weights untouched).
    """
    _check_model(model)
    if isinstance(token_reduction, str):
        check_choice('token_reduction', token_reduction, tuple(PAPER_SETTINGS))
        token_reduction = PAPER_SETTINGS[token_reduction]
    stock = [(m, type(m)) for m in (model, *model.blocks,
                                    *(b.attn for b in model.blocks))]
    for block in model.blocks:
        block.__class__ = ReducingBlock
        block.attn.__class__ = ReducingAttention
    if not isinstance(model, TokenReductionMixin):
        model.__class__ = type(f'TokenReduction{type(model).__name__}',
                               (TokenReductionMixin, type(model)), {})
    # An image is a clip of one frame: the token grid is (1, H', W').
    model.configured_grid = (1, *model.patch_embed.grid_size)
    try:
        model.set_token_reduction(token_reduction)
        _check_pool(model)
    except (TypeError, ValueError):  # a refused config leaves it as it was
        for module, cls in stock:
            module.__class__ = cls
        raise
    return model


def _check_pool(model: nn.Module) -> None:
    if model.token_reduction.runs_packed and \
            model.global_pool not in PACKED_POOLS:
        raise ValueError(
            f'global_pool={model.global_pool!r}: a packed batch (this '
            f'token_reduction keeps a token count per image) pools by one '
            f'of {PACKED_POOLS}; set token_reduction.packed=False or '
            'global_pool to one of them')


class TokenReductionMixin(TokenReducingBackbone):
    """A patched timm ViT as an adapter of :mod:`mmtokred.core`: its patch
    and position embedding, prefix tokens, pre-norm, and pooling."""

    @property
    def patch_projection(self) -> nn.Module:
        return self.patch_embed.proj

    def token_grid(self, x: Tensor) -> Tuple[int, int, int]:
        return grid_of(x[:, :, None], self.patch_embed.proj)

    def embed(self, x: Tensor, grid: Tuple[int, int, int]) -> Tensor:
        return self._pos_embed(self.patch_embed(x))

    def position_embedding(self, grid: Tuple[int, int, int]) -> Tensor:
        return self.pos_embed

    def clips(self, x: Tensor) -> Tensor:
        return x[:, :, None]

    def join_prefix(self, tokens: Tensor) -> Tensor:
        """The prefix tokens (class, distillation, registers) as the
        model's own ``_pos_embed`` makes them, from one dummy image, before
        ``tokens``."""
        prefix = self.num_prefix_tokens
        if not prefix:
            return self.pos_drop(tokens)
        dummy = self.pos_embed.new_zeros(
            1, math.prod(self.patch_embed.grid_size), tokens.shape[-1])
        prefix_x = self._pos_embed(dummy)[:, :prefix].to(tokens.dtype)
        return torch.cat([prefix_x.expand(tokens.shape[0], -1, -1),
                          self.pos_drop(tokens)], 1)

    def before_blocks(self, x: Tensor) -> Tensor:
        return self.norm_pre(self.patch_drop(x))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        x, state = self.forward_tokens(x)
        if state.lengths is None and (state.size is None
                                      or self.global_pool != 'avg'):
            return self.forward_head(x)
        # Merged tokens stand for several patches: weigh them so.
        pooled = mean_pool(x, state, self.num_prefix_tokens) \
            if self.global_pool == 'avg' else first_token(x, state)
        return self.head(self.head_drop(self.fc_norm(pooled)))


__all__ = ['apply_token_reduction', 'OFFICIAL_PPT', 'PAPER_SETTINGS',
           'TokenReductionMixin']
