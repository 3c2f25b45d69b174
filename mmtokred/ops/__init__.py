"""Pure-torch token operations: no OpenMMLab imports in this package."""
from .attention import attention
from .bipartite_matching import bipartite_soft_matching, merge_with_sizes
from .importance import (concentration, pooled_query_importance,
                         received_attention_importance)
from .joint_merge_prune import merge_or_prune
from .neighbour_merge import (DISTANCES, POSITIONS, REPRESENTATIVES,
                              neighbour_merge, tubelet_pixels, window_layout,
                              window_scores)
from .pruning import keep_tokens, most_important
from .schedules import SCHEDULES, merge_schedule
from .similarity_pruning import similarity_prune_index
from .token_state import TokenState

__all__ = [
    'DISTANCES', 'POSITIONS', 'REPRESENTATIVES', 'SCHEDULES', 'TokenState',
    'attention', 'bipartite_soft_matching', 'concentration', 'keep_tokens',
    'merge_or_prune', 'merge_schedule', 'merge_with_sizes', 'most_important',
    'neighbour_merge', 'pooled_query_importance',
    'received_attention_importance', 'similarity_prune_index',
    'tubelet_pixels', 'window_layout', 'window_scores'
]
