"""Pure-torch token operations: no OpenMMLab imports in this package."""
from .attention import attention
from .bipartite_matching import (bipartite_soft_matching, merge_in_rounds,
                                 merge_into_kept, merge_with_sizes)
from .importance import (activation_norm_importance,
                         attention_sharpness_importance, concentration,
                         pooled_query_importance, random_importance,
                         received_attention_importance)
from .joint_merge_prune import joint_merge_prune
from .linear import (CPU_LINEARS, cpu_linear, cpu_linear_reason,
                     cpu_linear_set_to, linear, set_cpu_linear)
from .neighbour_merge import (DISTANCES, POSITIONS, REPRESENTATIVES,
                              neighbour_merge, tubelet_pixels, window_layout,
                              window_scores)
from .packed_attention import PACKED_KERNELS, packed_attention
from .pruning import KEEP_MEAN, keep_tokens, prune
from .schedules import SCHEDULES, TokenPlan, merge_schedule, plan_tokens
from .similarity_pruning import similarity_prune_index
from .token_state import PADDING_BIAS, TokenState, weighted_mean

__all__ = [
    'CPU_LINEARS', 'DISTANCES', 'KEEP_MEAN', 'PACKED_KERNELS', 'PADDING_BIAS',
    'POSITIONS', 'REPRESENTATIVES',
    'SCHEDULES', 'TokenPlan', 'TokenState', 'activation_norm_importance',
    'attention_sharpness_importance', 'attention', 'bipartite_soft_matching',
    'concentration', 'cpu_linear', 'cpu_linear_reason', 'cpu_linear_set_to',
    'joint_merge_prune', 'keep_tokens', 'linear', 'merge_in_rounds',
    'merge_into_kept',
    'merge_schedule', 'merge_with_sizes',
    'neighbour_merge', 'packed_attention', 'plan_tokens',
    'pooled_query_importance', 'prune',
    'random_importance', 'received_attention_importance', 'set_cpu_linear',
    'similarity_prune_index', 'tubelet_pixels', 'weighted_mean',
    'window_layout', 'window_scores'
]
