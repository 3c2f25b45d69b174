"""Patch-similarity pruning, at the input or progressively in the blocks."""
from typing import Optional, Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from torch import Tensor, nn

from ..ops import TokenState, keep_tokens, similarity_prune_index
from .reducers import AttentionInputs, InputReducer
from .selected_blocks import SelectedBlocksReducer


def _check(name: str, threshold: Optional[float]) -> None:
    if threshold is not None and not -1 <= threshold <= 1:
        raise ValueError(f'{name} threshold is a cosine similarity in '
                         f'[-1, 1], got {threshold}')


@MODELS.register_module()
class PatchSimilarityPruning(InputReducer):
    """Prune the most redundant patches right after the patch projection.

    Redundancy is a patch embedding's mean cosine similarity to the other
    patches of the clip; the most redundant ``ratio`` of the patches are
    pruned, each only if a less redundant patch at least ``threshold``
    similar stays, so every cluster of similar patches keeps one.

    Args:
        ratio: fraction of the patches pruned, in [0, 1).
        threshold: cosine similarity to a kept, less redundant patch that
            pruning requires (None: any).
    """

    #: 'fallback': pruned patches that had no similar, less redundant patch
    #: (taken to keep the budget).
    branches = ('fallback', )

    def __init__(self, ratio: float = 0.4,
                 threshold: Optional[float] = 0.5) -> None:
        super().__init__()
        if not 0 <= ratio < 1:
            raise ValueError(
                f'PatchSimilarityPruning ratio must be in [0, 1), got {ratio}')
        _check('PatchSimilarityPruning', threshold)
        self.ratio = ratio
        self.threshold = threshold

    def forward(self, video: Tensor, projection: nn.Conv3d, pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        embeddings = projection(video).flatten(2).transpose(1, 2)
        tokens = embeddings + pos_embed
        batch, n, _ = tokens.shape
        state = TokenState()
        if track_source:
            state.source = torch.eye(n, device=tokens.device,
                                     dtype=tokens.dtype).expand(batch, -1, -1)
        r = round(self.ratio * n)
        if r == 0:
            return tokens, state
        # Similarity of content: the embeddings without position.
        index, fallbacks = similarity_prune_index(embeddings, r,
                                                  self.threshold)
        self.count('fallback', fallbacks.sum())
        return keep_tokens(tokens, state, index)


@MODELS.register_module()
class SimilarityPruning(SelectedBlocksReducer):
    """Patch-similarity pruning in chosen blocks (progressive), on the
    tokens after the attention residual.

    Args:
        blocks: indices of the blocks that prune (from 0).
        r: tokens pruned in each of them, or one count per block.
        threshold: as for :class:`PatchSimilarityPruning`.
    """

    branches = ('fallback', )

    def __init__(self,
                 blocks: Sequence[int] = (2, 5, 8),
                 r: Union[int, Sequence[int]] = 200,
                 threshold: Optional[float] = 0.5) -> None:
        super().__init__(blocks, r)
        _check('SimilarityPruning', threshold)
        self.threshold = threshold

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        r = self.removal(block_index, x.shape[1] - 1)
        if r == 0:
            return x, state
        index, fallbacks = similarity_prune_index(x, r, self.threshold)
        self.count('fallback', fallbacks.sum())
        return keep_tokens(x, state, index)
