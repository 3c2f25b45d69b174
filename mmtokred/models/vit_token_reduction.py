"""VideoMAE backbone with fused attention and pluggable token reduction:
an adapter of :mod:`mmtokred.core`."""
import inspect
from typing import Dict, Optional, Tuple

import torch.nn.functional as F
from mmaction.models.backbones.vit_mae import VisionTransformer
from mmaction.registry import MODELS
from torch import Tensor, nn

from ..core import TokenReducingBackbone, first_token, mean_pool
from ..ops.checks import is_int
from .blocks import FusedAttention, ReducibleBlock, check_heads

_STOCK_SIGNATURE = inspect.signature(VisionTransformer.__init__)


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
class TokenReductionVisionTransformer(TokenReducingBackbone,
                                      VisionTransformer):
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
        super().set_token_reduction(token_reduction)

    @property
    def patch_projection(self) -> nn.Module:
        """The Conv3d over tubelets, as the input reducers project."""
        return self.patch_embed.projection

    def token_grid(self, x: Tensor) -> Tuple[int, int, int]:
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

    def position_embedding(self, grid: Tuple[int, int, int]) -> Tensor:
        """The (1, N, C) position embedding, resized as stock does."""
        h, w = grid[1:]
        if (h, w) == self.grid_size:
            return self.pos_embed
        pos_embed = self.pos_embed.reshape(-1, *self.grid_size,
                                           self.embed_dims).permute(0, 3, 1, 2)
        pos_embed = F.interpolate(
            pos_embed, size=(h, w), mode='bicubic', align_corners=False)
        return pos_embed.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dims)

    def embed(self, x: Tensor, grid: Tuple[int, int, int]) -> Tensor:
        # The projection leaves the tokens as a transposed view: made
        # contiguous once here, so that no block copies them again or
        # adds on strided memory (4% of a ViT-B forward pass on CPU).
        return self.patch_embed(x)[0].contiguous() + \
            self.position_embedding(grid)

    def before_blocks(self, x: Tensor) -> Tensor:
        return self.pos_drop(x)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, C)`` of clips ``(B, 3, T, H, W)``.

        With ``return_feat_map=True``: ``(B, C, T', H', W')``.
        """
        tokens, state = self.forward_tokens(x)
        if self.return_feat_map:
            return tokens.reshape(-1, *self.token_grid(x),
                                  self.embed_dims).permute(0, 4, 1, 2, 3)
        if self.fc_norm is not None:
            return self.fc_norm(mean_pool(tokens, state))
        return first_token(tokens, state)
