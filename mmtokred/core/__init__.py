"""The token-reducing core, in pure torch (no OpenMMLab, no timm): the
attention, the block with its reducer slot, the token loop and pooling,
written once; a backbone is an adapter of it (:mod:`.adapter`, docs/core.md).
"""
from .adapter import TokenReducingBackbone
from .attention import TokenReducingAttention, attend
from .block import TokenReducingBlock
from .pooling import first_token, mean_pool
from .token_loop import embed_tokens, prefixed_state, ready_state, run_blocks

__all__ = [
    'TokenReducingAttention', 'TokenReducingBackbone', 'TokenReducingBlock',
    'attend', 'embed_tokens', 'first_token', 'mean_pool', 'prefixed_state',
    'ready_state', 'run_blocks'
]
