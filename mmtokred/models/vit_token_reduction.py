"""VideoMAE backbone with fused attention and pluggable token reduction."""
import inspect
import warnings
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmaction.models.backbones.vit_mae import VisionTransformer
from mmaction.registry import MODELS
from torch import Tensor, nn

from ..ops import TokenState
from ..ops.checks import is_int
from ..ops.packed import first_tokens, pack_padded
from ..reducers import REDUCERS, build_reducer, build_token_reduction
from .blocks import FusedAttention, ReducibleBlock, check_heads

_STOCK_SIGNATURE = inspect.signature(VisionTransformer.__init__)


def _build_reducer(cfg: Dict) -> nn.Module:
    """A reducer of :mod:`mmtokred.reducers` by ``type`` (registered there
    whenever), else one a user registered in mmaction's ``MODELS``."""
    if isinstance(cfg, dict) and cfg.get('type') in REDUCERS:
        return build_reducer(cfg)
    return MODELS.build(cfg)


def _check_build_args(args: inspect.BoundArguments) -> None:
    for name in ('patch_size', 'num_frames', 'tubelet_size', 'embed_dims',
                 'num_heads'):
        value = args.arguments[name]
        if not is_int(value) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value}')
    frames, tubelet = args.arguments['num_frames'], args.arguments[
        'tubelet_size']
    if frames % tubelet:
        raise ValueError(f'num_frames={frames} must be a multiple of '
                         f'tubelet_size={tubelet}')
    img_size, patch = args.arguments['img_size'], args.arguments['patch_size']
    if not isinstance(img_size, int) or img_size < patch or img_size % patch:
        raise ValueError(f'img_size={img_size} must be an integer multiple of '
                         f'patch_size={patch}')
    check_heads(args.arguments['embed_dims'], args.arguments['num_heads'])


@MODELS.register_module()
class TokenReductionVisionTransformer(VisionTransformer):
    """mmaction's VideoMAE ``VisionTransformer`` with token reduction.

    Takes every argument of the stock class and has the same state-dict keys,
    so official checkpoints load unchanged. Attention runs through
    ``scaled_dot_product_attention``. With ``token_reduction=None`` the output
    equals the stock backbone's.

    Args:
        token_reduction (dict, optional): ``dict(input=..., blocks=...,
            proportional_attention=False, track_source=False,
            packed=True)``, the first two optional configs of registered
            reducers; see
            :mod:`mmtokred.reducers`. None keeps every token.
        *args, **kwargs: the arguments of mmaction's ``VisionTransformer``.

    Attributes:
        token_reduction (TokenReduction): the reducers (``input``,
            ``blocks``, the latter's ``branch_counts()`` for adaptive
            reducers) and the switches, set by :meth:`set_token_reduction`.

    What a forward pass did
    with the tokens (how many entered each block, their state, time in the
    reducers) is observed from outside, with the forward hooks of
    :mod:`mmtokred.measure.observe`.
    """

    def __init__(self,
                 *args,
                 token_reduction: Optional[Dict] = None,
                 **kwargs) -> None:
        bound = _STOCK_SIGNATURE.bind(self, *args, **kwargs)
        bound.apply_defaults()
        _check_build_args(bound)
        super().__init__(*args, **kwargs)
        self.num_frames = bound.arguments['num_frames']
        self.tubelet_size = bound.arguments['tubelet_size']
        self.in_channels = bound.arguments['in_channels']
        #: The token grid of the configured clips (num_frames, img_size),
        #: for which the token budget is checked at build time.
        self.configured_grid = (self.num_frames // self.tubelet_size,
                                *self.grid_size)
        for block in self.blocks:
            block.__class__ = ReducibleBlock
            block.attn.__class__ = FusedAttention
        self.set_token_reduction(token_reduction)

    def set_token_reduction(self, token_reduction: Optional[Dict]) -> None:
        """Replace the token reduction (a ``token_reduction`` config, None
        for none); the weights stay."""
        if token_reduction is not None and self.return_feat_map:
            raise ValueError(
                'return_feat_map=True needs the dense (T, H, W) token grid, '
                'which token_reduction removes: set token_reduction=None or '
                'return_feat_map=False')
        reduction = build_token_reduction(token_reduction, len(self.blocks),
                                          build=_build_reducer)
        plan = reduction.plan(self.configured_grid, len(self.blocks))
        if plan.caps:
            raise reduction.budget_error(
                plan, 'in the configured clips (token grid '
                f'{self.configured_grid})')
        #: Grids of other clip sizes whose budgets were capped, each with
        #: the warning given once for it.
        self.capped_budgets: Dict[Tuple[int, int, int], str] = {}
        #: The reducers and switches, on the device of the weights.
        self.token_reduction = reduction.to(self.pos_embed.device)

    def _check_input(self, x: Tensor) -> Tuple[int, int, int]:
        """Validate a clip batch and return its (T', H', W') token grid."""
        if x.dim() != 5:
            raise ValueError('the backbone takes clips of shape (B, C, T, H, '
                             f'W), got a tensor of shape {tuple(x.shape)}')
        batch, channels, frames, height, width = x.shape
        if batch == 0:
            raise ValueError('the backbone takes clips of shape (B, C, T, H, '
                             'W) with B >= 1, got an empty batch of shape '
                             f'{tuple(x.shape)}')
        if channels != self.in_channels:
            raise ValueError(f'input has C={channels} channels, the backbone '
                             f'was built for in_channels={self.in_channels}')
        if frames != self.num_frames:
            raise ValueError(
                f'input has T={frames} frames; the position embedding serves '
                f'exactly num_frames={self.num_frames} (a multiple of '
                f'tubelet_size={self.tubelet_size})')
        for name, value in (('H', height), ('W', width)):
            if value < self.patch_size or value % self.patch_size:
                raise ValueError(
                    f'input has {name}={value}, which must be a positive '
                    f'multiple of patch_size={self.patch_size}')
        return (frames // self.tubelet_size, height // self.patch_size,
                width // self.patch_size)

    def _check_budget(self, grid: Tuple[int, int, int]) -> None:
        """Check the reducers on clips of another size than configured: an
        input budget this grid cannot hold is an error; block budgets over
        what the blocks see are capped, with one warning per grid."""
        reduction = self.token_reduction
        plan = reduction.plan(grid, len(self.blocks))
        if plan.caps and grid not in self.capped_budgets:
            self.capped_budgets[grid] = (
                f'{type(reduction.blocks).__name__} budget capped for '
                f'clips of token grid {grid} (configured: '
                f'{self.configured_grid}): {plan.describe_caps()}')
            warnings.warn(self.capped_budgets[grid], stacklevel=2)

    def _position_embedding(self, h: int, w: int) -> Tensor:
        """The (1, N, C) position embedding, resized as stock does."""
        if (h, w) == self.grid_size:
            return self.pos_embed
        pos_embed = self.pos_embed.reshape(-1, *self.grid_size,
                                           self.embed_dims).permute(0, 3, 1, 2)
        pos_embed = F.interpolate(
            pos_embed, size=(h, w), mode='bicubic', align_corners=False)
        return pos_embed.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, C)`` of clips ``(B, 3, T, H, W)``.

        With ``return_feat_map=True``: ``(B, C, T', H', W')``.
        """
        t, h, w = self._check_input(x)
        reduction = self.token_reduction
        if (t, h, w) != self.configured_grid:
            self._check_budget((t, h, w))
        pos_embed = self._position_embedding(h, w)
        if reduction.input is None:
            # The projection leaves the tokens as a transposed view: made
            # contiguous once here, so that no block copies them again or
            # adds on strided memory (4% of a ViT-B forward pass on CPU).
            x = self.patch_embed(x)[0].contiguous() + pos_embed
            state = TokenState()
        else:
            x, state = reduction.input(x, self.patch_embed.projection,
                                       pos_embed, reduction.track_source)
        if reduction.track_source and state.source is None:
            state.source = torch.eye(
                x.shape[1], device=x.device,
                dtype=x.dtype).expand(x.shape[0], -1, -1)
        if state.padded and reduction.packed:
            x, state = pack_padded(x, state)
        x = self.pos_drop(x)
        for index, block in enumerate(self.blocks):
            x, state = block(
                x, state, reducer=reduction.blocks, block_index=index,
                proportional_attention=reduction.proportional_attention)
        x = self.norm(x)

        if self.return_feat_map:
            return x.reshape(-1, t, h, w,
                             self.embed_dims).permute(0, 4, 1, 2, 3)
        if self.fc_norm is not None:
            return self.fc_norm(state.pool(x))
        if state.lengths is not None:  # each clip's first token
            return x[0, first_tokens(state.lengths, x.device)]
        return x[:, 0]
