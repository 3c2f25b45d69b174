"""A timm image ViT with token reduction as an MMAction2 frame backbone.

For frame-level recognizers (``Recognizer2D`` with ``TSNHead``): every
sampled frame goes through the (token-reducing) ViT on its own, the head
averages the frames. This module imports timm, so :mod:`mmtokred.models`
does not import it; :mod:`mmtokred.plugin` registers it when timm imports.
"""
import os
from typing import Dict, Optional, Union

import timm
from huggingface_hub.utils import LocalEntryNotFoundError
from mmaction.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .checkpoint import load_checkpoint
from .patch import apply_token_reduction


@MODELS.register_module()
class TimmTokenReductionViT(BaseModule):
    """A timm ``VisionTransformer`` (ViT, DeiT) with token reduction, as a
    backbone of MMAction2's ``Recognizer2D``.

    The model is created without its classifier (``num_classes=0``) and
    patched by :func:`mmtokred.timm.apply_token_reduction`. ``forward``
    takes frames ``(N, 3, H, W)`` and returns the model's pooled features
    (its class token, or the size-weighted average of the patch tokens for
    ``global_pool='avg'``) as ``(N, C, 1, 1)``, the shape ``TSNHead``
    pools and averages over segments.

    Args:
        model_name: a timm model name, e.g. ``'vit_base_patch16_224'``.
        pretrained: load timm's pretrained weights of ``model_name`` (from
            the Hugging Face hub or timm's cache).
        checkpoint: a local file of weights for ``model_name`` (a state
            dict, timm's or a ``{'state_dict': ...}`` / ``{'model': ...}``
            wrapper; ``.pth``/``.bin`` or ``.safetensors``), loaded instead
            of the hub's by :func:`mmtokred.timm.checkpoint.load_checkpoint`:
            safe loading (``weights_only=True``), the classifier dropped,
            the position embedding resized, every other key required.
        token_reduction: what :func:`~mmtokred.timm.apply_token_reduction`
            takes: ``dict(input=..., blocks=..., proportional_attention=...,
            track_source=..., packed=...)``, a name of
            :data:`mmtokred.timm.PAPER_SETTINGS`, or None (no reduction: the
            features equal timm's).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``img_size``,
            ``drop_path_rate``, ``global_pool``).

    Attributes:
        model: the patched timm model; ``model.forward_tokens(frames)``
            gives the tokens after the final norm and their ``TokenState``.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: bool = False,
                 checkpoint: Optional[str] = None,
                 token_reduction: Optional[Union[Dict, str]] = None,
                 **timm_kwargs) -> None:
        super().__init__()
        if 'num_classes' in timm_kwargs:
            raise ValueError('TimmTokenReductionViT creates the model without '
                             'a classifier (num_classes=0); set the classes '
                             'in the head (cls_head.num_classes)')
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise FileNotFoundError(
                    f'TimmTokenReductionViT checkpoint {checkpoint!r} is not '
                    'a file')
        self.model_name = model_name
        self.checkpoint = checkpoint
        try:
            model = timm.create_model(
                model_name, pretrained=pretrained and checkpoint is None,
                num_classes=0, **timm_kwargs)
        except LocalEntryNotFoundError as exc:  # offline, not in the cache
            raise OSError(
                "TimmTokenReductionViT: pretrained=True loads timm's "
                f'weights of {model_name!r} from the Hugging Face hub, which '
                'cannot be reached from here, and they are not in its local '
                'cache: give them as a local file (model.backbone.checkpoint='
                'FILE), or set model.backbone.pretrained=False (tools/test.py '
                "loads the weights from the recognizer's checkpoint)") from exc
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        self.model = apply_token_reduction(model, token_reduction)
        self.embed_dims = self.model.num_features

    def init_weights(self) -> None:
        """Keep the weights: timm initialised or loaded them when the model
        was created (timm's own ``init_weights`` would re-draw them)."""
        self._is_init = True

    def forward(self, x: Tensor) -> Tensor:
        """Frames ``(N, 3, H, W)`` -> pooled features ``(N, C, 1, 1)``."""
        return self.model(x)[:, :, None, None]


__all__ = ['TimmTokenReductionViT']
