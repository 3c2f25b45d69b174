"""The models a benchmark compares, built from configs with one set of
weights: stock (the registered backbone ours extends, e.g. mmaction's
VisionTransformer), dense (ours with token reduction off) and ours (each
config as written)."""
import copy
from typing import Callable, Dict, Optional

import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from torch import nn

from .. import checkpoint_fit
from ..measure.forward import forward_fn, prepare

VARIANTS = ('stock', 'dense', 'ours')


def has_token_reduction(cfg: Config) -> bool:
    """Whether ``cfg``'s backbone sets a token reduction."""
    return cfg.model.backbone.get('token_reduction') is not None


def stock_backbone_class(backbone_type: str) -> type:
    """The registered class that the backbone ``backbone_type`` extends
    (mmaction's ``VisionTransformer`` for ``TokenReductionVisionTransformer``
    by its base), or its own class where it extends none."""
    cls = MODELS.get(backbone_type)
    if cls is None:
        raise ValueError(f'model.backbone.type {backbone_type!r} is not a '
                         "registered model: import mmtokred.plugin (the "
                         "configs' custom_imports) before building it")
    return next((base for base in cls.__mro__[1:]
                 if MODELS.get(base.__name__) is base), cls)


def model_without_reduction(cfg: Config) -> Dict:
    """``cfg.model`` as a plain dict without the backbone's
    ``token_reduction``: what configs compared side by side must share."""
    model = copy.deepcopy(cfg.model.to_dict())
    model['backbone'].pop('token_reduction', None)
    return model


def build_variant(cfg: Config, variant: str) -> nn.Module:
    """Build one variant of ``cfg.model`` in eval mode, with the random
    weights of its constructors (callers load the weights they compare)."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    model_cfg = copy.deepcopy(cfg.model)
    if variant != 'ours':
        model_cfg.backbone.pop('token_reduction', None)
    if variant == 'stock':
        model_cfg.backbone.type = stock_backbone_class(
            model_cfg.backbone.type).__name__
    return MODELS.build(model_cfg).eval()


def build_variants(configs: Dict[str, Config],
                   checkpoint: Optional[str] = None) -> Dict[str, nn.Module]:
    """``stock``, ``dense`` (only when some config reduces: it would be that
    config again) and the model of each named config, all holding the same
    weights. The configs must build the same model but for the backbone's
    ``token_reduction``."""
    names = list(configs)
    if not names:
        raise ValueError('give at least one config')
    first = configs[names[0]]
    for name in names[1:]:
        if model_without_reduction(configs[name]) != \
                model_without_reduction(first):
            raise ValueError(
                f'{name} builds another model than {names[0]} (beyond '
                'model.backbone.token_reduction): configs compared in one '
                'run must share the model and its weights')
    torch.manual_seed(0)
    ours = build_variant(first, 'ours')
    if checkpoint:
        checkpoint_fit.load_checkpoint(ours, checkpoint)
    models = {'stock': build_variant(first, 'stock')}
    if any(has_token_reduction(cfg) for cfg in configs.values()):
        models['dense'] = build_variant(first, 'dense')
    for name in names:
        models[name] = ours if name == names[0] else build_variant(
            configs[name], 'ours')
    for model in models.values():
        if model is not ours:
            model.load_state_dict(ours.state_dict(), strict=True)
    return models


def probe_forward(spec: Dict) -> Callable[[], torch.Tensor]:
    """The measured forward of one variant, rebuilt in the fresh process of
    :class:`mmtokred.measure.memory.MemoryProbe`.

    ``spec`` holds ``config``, ``cfg_options``, ``variant``, ``weights`` and
    ``inputs`` (files saved by the caller), ``amp``, ``dtype`` and
    ``compile`` (as for :func:`~mmtokred.measure.forward.prepare`),
    ``attention_kernel`` (as for
    :func:`mmtokred.ops.attention.set_cpu_kernel`) and ``linear_kernel``
    (as for :func:`mmtokred.ops.linear.set_cpu_linear`; 'auto' if absent).
    """
    import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)

    from ..ops.attention import set_cpu_kernel
    from ..ops.linear import set_cpu_linear
    set_cpu_kernel(spec['attention_kernel'])
    set_cpu_linear(spec.get('linear_kernel', 'auto'))
    cfg = Config.fromfile(spec['config'])
    cfg.merge_from_dict(spec['cfg_options'] or {})
    model = build_variant(cfg, spec['variant'])
    model.load_state_dict(torch.load(spec['weights'], weights_only=True))
    prepare(model, spec['dtype'], spec['compile'])
    inputs = torch.load(spec['inputs'], weights_only=True)
    return forward_fn(model, inputs, spec['amp'])
