from .nepam import NEPAM
from .reducers import (BlockReducer, InputReducer, TokenReduction,
                       build_token_reduction)
from .tome import ToMe
from .vit_token_reduction import TokenReductionVisionTransformer

__all__ = [
    'BlockReducer', 'InputReducer', 'NEPAM', 'ToMe', 'TokenReduction',
    'TokenReductionVisionTransformer', 'build_token_reduction'
]
