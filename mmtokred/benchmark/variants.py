"""The models a benchmark compares, built from one config with one set of
weights: ours (the config as written), dense (ours with token reduction off)
and stock (mmaction's own VisionTransformer)."""
import copy
from typing import Dict, Optional

import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from torch import nn

VARIANTS = ('stock', 'dense', 'ours')


def has_token_reduction(cfg: Config) -> bool:
    return cfg.model.backbone.get('token_reduction') is not None


def build_variant(cfg: Config, variant: str) -> nn.Module:
    """Build one variant of ``cfg.model`` in eval mode, with the random
    weights of its constructors (callers load the weights they compare)."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    model_cfg = copy.deepcopy(cfg.model)
    if variant != 'ours':
        model_cfg.backbone.pop('token_reduction', None)
    if variant == 'stock':
        model_cfg.backbone.type = 'VisionTransformer'
    return MODELS.build(model_cfg).eval()


def build_variants(cfg: Config,
                   checkpoint: Optional[str] = None) -> Dict[str, nn.Module]:
    """Every variant ``cfg`` calls for, all holding the same weights.

    ``dense`` is left out when the config has no token reduction (it would be
    ``ours`` again).
    """
    torch.manual_seed(0)
    ours = build_variant(cfg, 'ours')
    if checkpoint:
        load_checkpoint(ours, checkpoint, map_location='cpu', strict=True)
    names = ['stock', 'dense'] if has_token_reduction(cfg) else ['stock']
    models = {}
    for name in names:
        models[name] = build_variant(cfg, name)
        models[name].load_state_dict(ours.state_dict(), strict=True)
    models['ours'] = ours
    return models
