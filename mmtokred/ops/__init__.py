"""Pure-torch token operations: no OpenMMLab imports in this package."""
from .attention import attention
from .bipartite_matching import bipartite_soft_matching, merge_with_sizes
from .neighbour_merge import (DISTANCES, POSITIONS, REPRESENTATIVES,
                              neighbour_merge, tubelet_pixels, window_layout,
                              window_scores)
from .schedules import SCHEDULES, merge_schedule
from .token_state import TokenState

__all__ = [
    'DISTANCES', 'POSITIONS', 'REPRESENTATIVES', 'SCHEDULES', 'TokenState',
    'attention', 'bipartite_soft_matching', 'merge_schedule',
    'merge_with_sizes', 'neighbour_merge', 'tubelet_pixels', 'window_layout',
    'window_scores'
]
