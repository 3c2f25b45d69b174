"""VideoMAE's masked-autoencoder pretraining around the backbone.

As MCG-NJU/VideoMAE runs it (``modeling_pretrain.py``,
``masking_generator.py``, ``engine_for_pretraining.py``): tube masking (the
same patches hidden in every tubelet slice), the encoder on the visible
tokens only, a light decoder that fills the hidden ones in with a learned
mask token, and a mean squared error on the hidden patches' pixels, each
patch normalised by its own mean and deviation. The encoder's weights keep
the backbone's state-dict keys (``backbone.*``), so a fine-tune config
loads them with ``init_cfg=dict(type='Pretrained', prefix='backbone.')``.
"""
import math
from numbers import Real
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmaction.models.backbones.vit_mae import Block, get_sinusoid_encoding
from mmaction.registry import MODELS
from mmengine.model import BaseModel, BaseModule, ModuleList
from torch import Tensor, nn

from ..ops import TokenState
from .blocks import FusedAttention, ReducibleBlock, check_heads

#: Floor of the spread under ``residual_share`` (squared target units, as
#: the loss): a batch of constant clips has spread 0 (rounding: ~1e-14).
RESIDUAL_SPREAD_FLOOR = 1e-6


def _is_number(value) -> bool:
    """A real number that is not a bool and not NaN."""
    return isinstance(value, Real) and not isinstance(value, bool) and (
        not math.isnan(value))


def tube_mask(batch: int, grid: Tuple[int, int, int], ratio: float,
              device: Optional[torch.device] = None) -> Tensor:
    """Which tokens of a ``(T', H', W')`` grid are hidden, ``(B, N)`` bool.

    ``TubeMaskingGenerator``: ``int(ratio * H' * W')`` positions of each
    clip's frame, chosen at random, hidden in every one of its T' slices.
    """
    frames, height, width = grid
    per_frame = height * width
    if not (_is_number(ratio) and 0 <= ratio < 1):
        raise ValueError(f'mask_ratio must be in [0, 1) (a number), got '
                         f'{ratio!r}')
    hidden = int(ratio * per_frame)
    ranks = torch.rand(batch, per_frame, device=device).argsort(1).argsort(1)
    return (ranks < hidden).repeat(1, frames)


def check_mask_ratio(ratio: float, grid: Tuple[int, int, int]) -> None:
    """``ratio`` must hide at least one and at most ``N - 1`` of the ``N``
    patches of each frame of ``grid``, counted as :func:`tube_mask` does
    (``int(ratio * N)``): none hidden leaves the loss no target, none
    visible leaves the encoder no input."""
    per_frame = grid[1] * grid[2]
    if per_frame < 2:
        raise ValueError(
            f'mask_ratio has no allowed value for the token grid '
            f'{tuple(grid)}: masking needs at least 2 patches per frame (1 '
            f'hidden, 1 visible), got mask_ratio={ratio!r}')
    # The least float whose int(ratio * N) is 1; any float below 1 keeps
    # int(ratio * N) <= N - 1.
    low = 1 / per_frame
    while int(math.nextafter(low, 0) * per_frame) >= 1:
        low = math.nextafter(low, 0)
    while int(low * per_frame) < 1:
        low = math.nextafter(low, 1)
    if not (_is_number(ratio) and low <= ratio < 1):
        got = repr(ratio) if _is_number(ratio) else (
            f'{ratio!r} (a {type(ratio).__name__})')
        raise ValueError(
            f'mask_ratio must be in [{low!r}, 1) for the token grid '
            f'{tuple(grid)}, so that int(mask_ratio * {per_frame}) hides at '
            f'least 1 and at most {per_frame - 1} of the {per_frame} patches '
            f'of each frame, got {got}')


def pixel_targets(videos: Tensor, tubelet_size: int, patch_size: int,
                  normalise: bool = True) -> Tensor:
    """Per-token pixels ``(B, N, tubelet * patch**2 * C)`` of clips
    ``(B, C, T, H, W)`` with values in [0, 1], in the order of
    ``engine_for_pretraining.train_one_epoch``: with ``normalise`` (its
    ``normlize_target``) each tubelet's channel is normalised by its own
    mean and unbiased deviation."""
    b, c, t, h, w = videos.shape
    x = videos.reshape(b, c, t // tubelet_size, tubelet_size, h // patch_size,
                       patch_size, w // patch_size, patch_size)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(
        b, -1, tubelet_size * patch_size**2, c)
    if normalise:
        x = (x - x.mean(-2, keepdim=True)) / (
            x.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


@MODELS.register_module()
class VideoMAEDecoder(BaseModule):
    """``PretrainVisionTransformerDecoder`` with its ``encoder_to_decoder``
    projection, mask token and fixed sinusoid position table.

    Args:
        num_patches (int): tokens of the full grid.
        in_dims (int): width of the encoder.
        out_dims (int): pixels predicted per token (``3 * tubelet *
            patch**2``).
        embed_dims, depth, num_heads, mlp_ratio: the decoder's blocks
            (VideoMAE's ViT-B: 384, 4, 6, 4).
    """

    def __init__(self,
                 num_patches: int,
                 in_dims: int,
                 out_dims: int,
                 embed_dims: int = 384,
                 depth: int = 4,
                 num_heads: int = 6,
                 mlp_ratio: float = 4.,
                 norm_cfg: Dict = dict(type='LN', eps=1e-6),
                 init_cfg: Optional[List[Dict]] = [
                     dict(type='Xavier', layer='Linear',
                          distribution='uniform', bias=0.),
                     dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
                 ]) -> None:
        super().__init__(init_cfg=init_cfg)
        check_heads(embed_dims, num_heads, prefix='decoder.')
        self.embed = nn.Linear(in_dims, embed_dims, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        nn.init.trunc_normal_(self.mask_token, std=.02)
        self.register_buffer(
            'pos_embed', get_sinusoid_encoding(num_patches, embed_dims),
            persistent=False)
        self.blocks = ModuleList([
            Block(embed_dims=embed_dims, num_heads=num_heads,
                  mlp_ratio=mlp_ratio, qkv_bias=True, norm_cfg=norm_cfg)
            for _ in range(depth)
        ])
        for block in self.blocks:  # fused attention, as the backbone's
            block.__class__ = ReducibleBlock
            block.attn.__class__ = FusedAttention
        self.norm = nn.LayerNorm(embed_dims, eps=norm_cfg.get('eps', 1e-5))
        self.head = nn.Linear(embed_dims, out_dims)

    def forward(self, visible: Tensor, mask: Tensor) -> Tensor:
        """Predictions ``(B, M, out_dims)`` for the hidden tokens of ``mask``
        ``(B, N)``, in grid order, from the encoded ``visible`` ones."""
        batch = visible.shape[0]
        pos = self.pos_embed.to(visible.dtype).expand(batch, -1, -1)
        dims = pos.shape[-1]
        pos_visible = pos[~mask].reshape(batch, -1, dims)
        pos_hidden = pos[mask].reshape(batch, -1, dims)
        x = torch.cat([self.embed(visible) + pos_visible,
                       self.mask_token + pos_hidden], 1)
        state = TokenState()
        for block in self.blocks:
            x, state = block(x, state)
        return self.head(self.norm(x[:, -pos_hidden.shape[1]:]))


@MODELS.register_module()
class VideoMAEPretrainer(BaseModel):
    """Masked-autoencoder pretraining of a VideoMAE backbone.

    Args:
        backbone (dict): the backbone (``TokenReductionVisionTransformer``
            without token reduction). It is built with
            ``use_mean_pooling=False``: the encoder ends with a LayerNorm,
            as VideoMAE's pretraining encoder; a fine-tune model built with
            ``use_mean_pooling=True`` leaves that norm out and adds a new
            ``fc_norm``, as VideoMAE's fine-tuning does.
        decoder (dict): options of :class:`VideoMAEDecoder` (its sizes are
            taken from the backbone).
        mask_ratio (float): share of each frame's patches hidden (0.9):
            ``int(mask_ratio * N)`` of a frame's N patches, which must be
            at least 1 and at most N - 1 (:func:`check_mask_ratio`).
        norm_pixels (bool): targets normalised per patch (VideoMAE's
            default), else the pixels in [0, 1].
        data_preprocessor (dict): ``ActionDataPreprocessor``; its mean and
            std turn the inputs back into pixels for the targets.
    """

    def __init__(self,
                 backbone: Dict,
                 decoder: Optional[Dict] = None,
                 mask_ratio: float = 0.9,
                 norm_pixels: bool = True,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        # Built here from mmaction's registry, which holds
        # ActionDataPreprocessor whatever the default scope.
        super().__init__(
            data_preprocessor=MODELS.build(
                data_preprocessor or dict(type='ActionDataPreprocessor')),
            init_cfg=init_cfg)
        if backbone.get('use_mean_pooling', False):
            raise ValueError(
                'backbone.use_mean_pooling must be False or unset for '
                'pretraining: the encoder ends with a LayerNorm over every '
                'token (VideoMAE pretraining), not a pooled fc_norm')
        if backbone.get('token_reduction') is not None:
            raise ValueError(
                'backbone.token_reduction must be None for pretraining: '
                'the encoder already sees only the visible tokens')
        self.backbone = MODELS.build(dict(backbone, use_mean_pooling=False))
        check_mask_ratio(mask_ratio, self.backbone.configured_grid)
        # One mask drawn at build: it advances the random generator as
        # every build has, so a seed initialises the decoder the same.
        tube_mask(1, self.backbone.configured_grid, mask_ratio)
        self.mask_ratio = mask_ratio
        self.norm_pixels = norm_pixels
        tubelet, patch = self.backbone.tubelet_size, self.backbone.patch_size
        self.decoder = MODELS.build(
            dict(dict(type='VideoMAEDecoder'), **(decoder or {}),
                 num_patches=self.backbone.pos_embed.shape[1],
                 in_dims=self.backbone.embed_dims,
                 out_dims=self.backbone.in_channels * tubelet * patch**2))

    def encode(self, videos: Tensor, mask: Tensor) -> Tensor:
        """The encoder on the tokens ``mask`` leaves visible: ``(B, V, C)``
        (V the same for every clip: tube masks hide a fixed count)."""
        backbone = self.backbone
        x = backbone.patch_embed(videos)[0] + backbone.pos_embed
        x = backbone.pos_drop(x[~mask].reshape(x.shape[0], -1, x.shape[-1]))
        state = TokenState()
        for block in backbone.blocks:
            x, state = block(x, state)
        return backbone.norm(x)

    def targets(self, videos: Tensor, mask: Tensor) -> Tensor:
        """The hidden tokens' pixels ``(B, M, D)`` in grid order."""
        preprocessor = self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            videos = videos * preprocessor.std + preprocessor.mean
        pixels = pixel_targets(videos / 255., self.backbone.tubelet_size,
                               self.backbone.patch_size, self.norm_pixels)
        return pixels[mask].reshape(videos.shape[0], -1, pixels.shape[-1])

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``mode='loss'``: ``{'loss': ..., 'residual_share': ...}``;
        ``'tensor'``: the predicted and target pixels of the hidden tokens
        and the mask.

        ``residual_share`` is the loss over the spread of the targets about
        each clip's mean hidden patch (what predicting that mean would
        score; 1: nothing learnt beyond it), the spread floored at
        :data:`RESIDUAL_SPREAD_FLOOR`. On a batch of constant clips, where
        the mean predicts every target, it is ``loss / 1e-6``: finite, and 0
        once the model predicts the constant."""
        if inputs.dim() == 6:  # (B, views, C, T, H, W) from the pipeline
            inputs = inputs.flatten(0, 1)
        grid = self.backbone.configured_grid
        if self.backbone.token_grid(inputs) != grid:
            # The decoder's position table is of the configured grid.
            raise ValueError(
                f'pretraining takes clips of the configured size (token grid '
                f'{grid}: num_frames and img_size), got {tuple(inputs.shape)}')
        mask = tube_mask(inputs.shape[0], grid, self.mask_ratio,
                         inputs.device)
        predicted = self.decoder(self.encode(inputs, mask), mask)
        with torch.no_grad():
            target = self.targets(inputs, mask)
        if mode == 'loss':
            loss = F.mse_loss(predicted, target)
            # Logged beside the loss: its share of what predicting each
            # clip's mean hidden patch would leave (1: nothing learnt).
            spread = (target - target.mean(1, keepdim=True)).square().mean()
            # Floored: constant clips leave no spread (0, or rounding's
            # ~1e-14), which would log inf or ~1e13.
            spread = spread.clamp_min(RESIDUAL_SPREAD_FLOOR)
            return {'loss': loss, 'residual_share': loss.detach() / spread}
        if mode == 'tensor':
            return predicted, target, mask
        raise ValueError(f"mode must be 'loss' or 'tensor' (pretraining has "
                         f"no predictions to evaluate), got {mode!r}")
