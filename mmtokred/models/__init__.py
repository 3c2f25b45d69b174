from .jmp import JMP
from .nepam import NEPAM
from .ppt import PPT
from .reducers import (AttentionInputs, BlockReducer, InputReducer, Reducer,
                       TokenReduction, build_token_reduction)
from .similarity_pruning import PatchSimilarityPruning, SimilarityPruning
from .token_pruning import TokenPruning
from .tome import ToMe
from .vit_token_reduction import TokenReductionVisionTransformer

__all__ = [
    'AttentionInputs', 'BlockReducer', 'InputReducer', 'JMP', 'NEPAM', 'PPT',
    'PatchSimilarityPruning', 'Reducer', 'SimilarityPruning', 'ToMe',
    'TokenPruning', 'TokenReduction', 'TokenReductionVisionTransformer',
    'build_token_reduction'
]
