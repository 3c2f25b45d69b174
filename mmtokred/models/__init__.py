"""The registered backbone and reducers (mmaction's ``MODELS`` registry)."""
from ..upstream_fixes import make_mmaction_importable

make_mmaction_importable()  # mmaction.models cannot be imported without it

from .jmp import JMP  # noqa: E402
from .nepam import NEPAM  # noqa: E402
from .ppt import PPT  # noqa: E402
from .reducers import (AttentionInputs, BlockReducer,  # noqa: E402
                       InputReducer, Reducer, TokenReduction,
                       build_token_reduction)
from .similarity_pruning import (PatchSimilarityPruning,  # noqa: E402
                                 SimilarityPruning)
from .token_pruning import TokenPruning  # noqa: E402
from .tome import ToMe  # noqa: E402
from .vit_token_reduction import TokenReductionVisionTransformer  # noqa: E402

__all__ = [
    'AttentionInputs', 'BlockReducer', 'InputReducer', 'JMP', 'NEPAM', 'PPT',
    'PatchSimilarityPruning', 'Reducer', 'SimilarityPruning', 'ToMe',
    'TokenPruning', 'TokenReduction', 'TokenReductionVisionTransformer',
    'build_token_reduction'
]
