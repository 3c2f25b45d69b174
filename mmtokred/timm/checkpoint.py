"""The one loader of local weights files into timm ViTs: for the benchmark
and evaluation (:mod:`.compare`) and the frame backbone (:mod:`.backbone`).
"""
from typing import Dict

from timm.models import clean_state_dict
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import Tensor, nn

from .. import checkpoint_fit, safe_loading

#: Where training scripts put the weights in a checkpoint, in the order
#: timm's own loader prefers them (the EMA weights first).
STATE_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')


def read_state_dict(checkpoint: str) -> Dict[str, Tensor]:
    """The weights of a file: safetensors, or a torch file read by
    :func:`mmtokred.safe_loading.load` (never code); under one of
    :data:`STATE_KEYS` or bare, ``module.`` (DDP) and ``_orig_mod.``
    (torch.compile) prefixes removed."""
    if str(checkpoint).endswith('.safetensors'):
        from safetensors.torch import load_file
        state = load_file(checkpoint, device='cpu')
    else:
        state = safe_loading.load(checkpoint, map_location='cpu')
    if isinstance(state, dict):
        key = next((key for key in STATE_KEYS
                    if isinstance(state.get(key), dict)), None)
        state = state if key is None else state[key]
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint} holds no state dict '
                         f'({type(state).__name__})')
    return clean_state_dict(state)


def load_checkpoint(model: nn.Module, checkpoint: str) -> None:
    """Load ``checkpoint`` (:func:`read_state_dict`) into the timm ViT
    ``model``, every key required: timm's ViT filter converts official
    checkpoints (DeiT, the original ViT) and resamples the position
    embedding to the model's grid; a classifier the model was created
    without (``num_classes=0``) is dropped. A checkpoint of another model
    is refused (:func:`mmtokred.checkpoint_fit.check`)."""
    state = checkpoint_filter_fn(read_state_dict(checkpoint), model)
    classifiers = model.pretrained_cfg.get('classifier') or ()
    classifiers = (classifiers, ) if isinstance(classifiers, str) else \
        classifiers
    own = model.state_dict()
    for name in classifiers:
        for key in (f'{name}.weight', f'{name}.bias'):
            if key not in own:
                state.pop(key, None)
    checkpoint_fit.check(model, state, str(checkpoint))
    model.load_state_dict(state, strict=True)
