"""Block reducers that act in chosen blocks only, removing r tokens there,
and the importance scores they rank tokens by."""
from typing import Callable, Dict, Optional, Sequence, Union

from torch import Tensor

from ..ops import (KEEP_MEAN, activation_norm_importance,
                   attention_sharpness_importance, pooled_query_importance,
                   random_importance, received_attention_importance)
from ..ops.checks import check_block_counts, check_choice, check_int
from .attention_inputs import AttentionInputs
from .block_stage import BlockReducer
from .costs import Widths


def class_token_importance(x: Tensor, attn: AttentionInputs,
                           seed: int) -> Tensor:
    """PPT's importance ``(B, N)``: the class token's attention summed over
    heads times the norm of each token's value over all heads together
    (xjwu1024/PPT ppt_deit.py, ``PPTAttention.score_assignment_step``);
    normalised over the patch tokens by :meth:`ImportanceReducer.score`."""
    B, H, N, D = attn.v.shape
    value_norm = attn.v.float().transpose(1, 2).reshape(B, N, H * D).norm(
        dim=-1)
    return attn.class_attention().sum(1) * value_norm


#: name -> score(x, attn, seed): ``(B, N)`` importances of every token (see
#: :mod:`mmtokred.ops.importance`; all but 'class_token' sum to 1).
IMPORTANCE: Dict[str, Callable[[Tensor, AttentionInputs, int], Tensor]] = {
    'received': lambda x, a, seed: received_attention_importance(
        a.q, a.k, a.v, a.scale, a.key_bias),
    'pooled_query': lambda x, a, seed: pooled_query_importance(
        a.q, a.k, a.v, a.scale, a.key_bias),
    'norm': lambda x, a, seed: activation_norm_importance(x),
    'sharpness': lambda x, a, seed: attention_sharpness_importance(
        a.q, a.k, a.scale, a.key_bias),
    'random': lambda x, a, seed: random_importance(x, seed),
    'class_token': class_token_importance,
}
#: Scores that read a class token (token 0): only for models that have one.
NEEDS_CLASS_TOKEN = ('class_token', )
#: name -> macs(tokens, widths): the products of each score: the attention
#: matrix again ('received', 'sharpness'), one query's row ('pooled_query',
#: 'class_token'), or none.
IMPORTANCE_MACS: Dict[str, Callable[[int, Widths], int]] = {
    'received': lambda n, w: w.heads * n * n * w.head,
    'sharpness': lambda n, w: w.heads * n * n * w.head,
    'pooled_query': lambda n, w: w.heads * n * w.head,
    'class_token': lambda n, w: w.heads * n * w.head,
    'norm': lambda n, w: 0,
    'random': lambda n, w: 0,
}


#: The default placement of the selected-block reducers: blocks 1 to 10 of
#: ViT-B, many small steps. On the proxy it kept more top-1 than PPT's and
#: EViT's three large steps at blocks 3, 6, 9 at the same FLOPs
#: (docs/adaptive_methods.md).
EVERY_BLOCK = tuple(range(1, 11))
#: Tokens removed in those blocks (1568 -> 358), the same fraction each
#: time: about half the FLOPs of ViT-B 16x224.
HALF_FLOPS = (215, 186, 160, 138, 119, 103, 89, 77, 66, 57)


def every_block(depth: int) -> list:
    """Blocks 1 to ``depth - 2``: the default placement for any depth."""
    return list(range(1, depth - 1))


def proportional_blocks(depth: int) -> list:
    """PPT's and EViT's blocks 3, 6 and 9 (from 0) of 12, scaled to
    ``depth`` blocks."""
    return sorted({min(depth - 1, round(depth * b / 12)) for b in (3, 6, 9)})


class SelectedBlocksReducer(BlockReducer):
    """Removes ``r`` tokens in each of the blocks ``blocks`` (from 0).

    Args:
        blocks: indices of the blocks that reduce.
        r: tokens removed in each of them, or one count per block.
    """

    def __init__(self, blocks: Sequence[int],
                 r: Union[int, Sequence[int]]) -> None:
        super().__init__()
        self.removals: Dict[int, int] = check_block_counts(
            type(self).__name__, blocks, r)

    def requested(self, block_index: int) -> int:
        return self.removals.get(block_index, 0)

    def bind(self, depth: int, prefix: int = 0) -> None:
        super().bind(depth, prefix)
        outside = [b for b in self.removals if b >= depth]
        if outside:
            name = type(self).__name__
            defaults = self.removals == dict(zip(EVERY_BLOCK, HALF_FLOPS))
            raise ValueError(
                f'{name} blocks {outside} do not exist: the backbone has '
                f'blocks 0..{depth - 1}. '
                + ('The default blocks (1 to 10) and r are ViT-B 16x224\'s '
                   '(12 blocks, 1568 tokens). ' if defaults else '')
                + f'Give {name} blocks and r (one count per block) for this '
                f'model, e.g. blocks={tuple(every_block(depth))} '
                '(tools/calibrate.py finds r for a FLOPs target)')


class ImportanceReducer(SelectedBlocksReducer):
    """A selected-blocks reducer that ranks tokens by an importance score.

    Args:
        blocks, r: as for :class:`SelectedBlocksReducer`.
        importance: a name of ``IMPORTANCE``.
        keep_mean: what pruning does with the tokens it removes, one of
            ``KEEP_MEAN`` (see :func:`mmtokred.ops.prune`), or None where the
            reducer does not prune by importance.
        seed: of the 'random' score (block ``i`` uses ``seed + i``).
    """

    def __init__(self, blocks: Sequence[int], r: Union[int, Sequence[int]],
                 importance: str, keep_mean: Optional[str] = None,
                 seed: int = 0) -> None:
        super().__init__(blocks, r)
        name = type(self).__name__
        if importance not in IMPORTANCE:
            raise ValueError(f'{name} importance must be one of '
                             f'{tuple(IMPORTANCE)}, got {importance!r}')
        if keep_mean is not None:
            check_choice(f'{name} keep_mean', keep_mean, KEEP_MEAN)
        check_int(f'{name} seed', seed, -2**63)
        self.importance = importance
        self.keep_mean = keep_mean
        self.seed = seed

    def bind(self, depth: int, prefix: int = 0) -> None:
        if self.importance in NEEDS_CLASS_TOKEN and prefix < 1:
            others = tuple(n for n in IMPORTANCE if n not in NEEDS_CLASS_TOKEN)
            raise ValueError(
                f'{type(self).__name__} importance={self.importance!r} '
                "reads the class token's attention: the model has no class "
                f'token; choose one of {others}')
        super().bind(depth, prefix)

    def importance_macs(self, tokens: int, widths: Widths) -> int:
        """The products of :meth:`score` on ``tokens``."""
        return IMPORTANCE_MACS[self.importance](tokens, widths)

    def score(self, x: Tensor, attn: AttentionInputs,
              block_index: int) -> Tensor:
        """``(B, N - prefix)`` importance of the tokens after the prefix in
        block ``block_index``, summing to 1."""
        score = IMPORTANCE[self.importance](x, attn, self.seed + block_index)
        if not self.prefix and self.importance not in NEEDS_CLASS_TOKEN:
            return score
        score = score[:, self.prefix:]
        return score / score.sum(1, keepdim=True).clamp(min=1e-12)
