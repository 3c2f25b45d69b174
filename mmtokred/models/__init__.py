from .reducers import BlockReducer, InputReducer, build_token_reduction
from .vit_token_reduction import TokenReductionVisionTransformer

__all__ = [
    'BlockReducer', 'InputReducer', 'TokenReductionVisionTransformer',
    'build_token_reduction'
]
