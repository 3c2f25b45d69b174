"""The registered VideoMAE backbone, its masked-autoencoder pretraining,
and every reducer of :mod:`mmtokred.reducers` in mmaction's ``MODELS``
registry (so configs name them by ``type``, and reducers registered in
``MODELS`` build too)."""
from mmaction.registry import MODELS

from ..reducers import REDUCERS
from ..upstream_fixes import make_mmaction_importable

make_mmaction_importable()  # mmaction.models cannot be imported without it

from .vit_token_reduction import TokenReductionVisionTransformer  # noqa: E402
from .mae_pretraining import VideoMAEDecoder, VideoMAEPretrainer  # noqa: E402

for _name, _reducer in REDUCERS.items():
    MODELS.register_module(name=_name, module=_reducer)

__all__ = [
    'TokenReductionVisionTransformer', 'VideoMAEDecoder', 'VideoMAEPretrainer'
]
