"""The token loop of a token-reducing backbone, written once: the input
stage (or the dense embedding), the prefix tokens, source tracking, packing
of a padded batch, the blocks with their reducer and the final norm.

The steps take the backbone as an adapter
(:class:`~mmtokred.core.adapter.TokenReducingBackbone`) and ask it only for
what differs between backbones.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import TokenState
from ..ops.packed import pack_padded
from ..reducers import TokenReduction


def prefixed_state(state: TokenState, tokens: Tensor,
                   prefix: int) -> TokenState:
    """The state of ``prefix`` tokens (one patch each, holding no input
    patch: source columns are the prefix's, then the patches') followed by
    ``tokens`` of ``state`` (a padded batch, not a packed one)."""
    if not prefix or (state.size is None and state.source is None):
        return state
    sizes = state.sizes_like(tokens)
    size = torch.cat([sizes.new_ones(sizes.shape[0], prefix, 1), sizes], 1)
    source = None
    if state.source is not None:
        eye = torch.eye(prefix, dtype=state.source.dtype,
                        device=tokens.device).expand(tokens.shape[0], -1, -1)
        source = torch.cat([F.pad(eye, (0, state.source.shape[-1])),
                            F.pad(state.source, (prefix, 0))], 1)
    return TokenState(size=size, source=source, padded=state.padded)


def embed_tokens(backbone, pixels: Tensor,
                 grid: Sequence[int]) -> Tuple[Tensor, TokenState]:
    """The tokens the blocks get, prefix first, and their state: the
    backbone's dense embedding, or its input reducer's tokens joined to the
    prefix tokens."""
    reduction = backbone.token_reduction
    if reduction.input is None:
        return backbone.embed(pixels, grid), TokenState()
    tokens, state = reduction.input(
        backbone.clips(pixels), backbone.patch_projection,
        backbone.position_embedding(grid), reduction.track_source)
    return backbone.join_prefix(tokens), prefixed_state(
        state, tokens, backbone.num_prefix_tokens)


def ready_state(x: Tensor, state: TokenState,
                reduction: TokenReduction) -> Tuple[Tensor, TokenState]:
    """Every token its own source where sources are tracked, and a padded
    batch packed where the reduction packs."""
    if reduction.track_source and state.source is None:
        state.source = torch.eye(
            x.shape[1], device=x.device,
            dtype=x.dtype).expand(x.shape[0], -1, -1)
    if state.padded and reduction.packed:
        x, state = pack_padded(x, state)
    return x, state


def run_blocks(blocks: Sequence[nn.Module], x: Tensor, state: TokenState,
               reduction: TokenReduction) -> Tuple[Tensor, TokenState]:
    """``x`` through every block, each with the block reducer."""
    for index, block in enumerate(blocks):
        x, state = block(
            x, state, reducer=reduction.blocks, block_index=index,
            proportional_attention=reduction.proportional_attention)
    return x, state
