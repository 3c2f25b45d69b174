"""The registered VideoMAE backbone and its masked-autoencoder pretraining.
Their reducers are built from :data:`mmtokred.reducers.REDUCERS`, the one
registry of reducers (a new one registers with
:func:`mmtokred.reducers.register`)."""
from ..upstream_fixes import make_mmaction_importable

make_mmaction_importable()  # mmaction.models cannot be imported without it

from .vit_token_reduction import TokenReductionVisionTransformer  # noqa: E402
from .mae_pretraining import VideoMAEDecoder, VideoMAEPretrainer  # noqa: E402

__all__ = [
    'TokenReductionVisionTransformer', 'VideoMAEDecoder', 'VideoMAEPretrainer'
]
