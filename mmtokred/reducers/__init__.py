"""Token reducers for ViTs in pure torch (no OpenMMLab, no timm): one class
per method, for the VideoMAE backbone (:mod:`mmtokred.models`, which also
registers them in MMAction2's ``MODELS``) and timm's image ViTs
(:mod:`mmtokred.timm`) alike.

A new reducer is a module here that subclasses :class:`InputReducer` or
:class:`BlockReducer` (or :class:`SelectedBlocksReducer`), is decorated with
:func:`register`, and is imported below.
"""
from .attention_inputs import AttentionInputs
from .block_stage import BlockReducer, split_prefix
from .input_stage import InputReducer, embed, grid_of, projection_weight
from .reducer import Reducer
from .registry import REDUCERS, build_reducer, register
from .selected_blocks import (EVERY_BLOCK, HALF_FLOPS, IMPORTANCE,
                              ImportanceReducer, SelectedBlocksReducer,
                              every_block, proportional_blocks)
from .token_reduction import (STAGES, SWITCHES, TokenReduction,
                              build_token_reduction)
# The reducers: each registers itself.
from .jmp import JMP  # noqa: E402,I100
from .nepam import NEPAM
from .ppt import PPT
from .similarity_pruning import PatchSimilarityPruning, SimilarityPruning
from .token_pruning import TokenPruning
from .tome import ToMe

__all__ = [
    'AttentionInputs', 'BlockReducer', 'EVERY_BLOCK', 'HALF_FLOPS',
    'IMPORTANCE', 'ImportanceReducer', 'InputReducer', 'JMP', 'NEPAM', 'PPT',
    'PatchSimilarityPruning', 'REDUCERS', 'Reducer', 'STAGES', 'SWITCHES',
    'SelectedBlocksReducer', 'SimilarityPruning', 'ToMe', 'TokenPruning',
    'TokenReduction', 'build_reducer', 'build_token_reduction', 'embed',
    'every_block', 'grid_of', 'projection_weight', 'proportional_blocks',
    'register', 'split_prefix'
]
