"""The block stage: a reducer called inside every block, between the
attention residual and the MLP, and the prefix tokens it keeps out."""
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from ..ops import TokenState
from ..ops.packed import pack_equal, packed_cat, split_clips
from .attention_inputs import AttentionInputs
from .costs import Widths
from .reducer import Reducer


Join = Callable[[Tensor, TokenState], Tuple[Tensor, TokenState]]


def _joined(x: Tensor, state: TokenState) -> Tuple[Tensor, TokenState]:
    return x, state


def split_prefix(x: Tensor, state: TokenState,
                 prefix: int) -> Tuple[Tensor, TokenState, Join]:
    """The tokens after the first ``prefix`` of ``x`` with their state, and
    the function that puts the prefix tokens back before reduced ones."""
    if not prefix:
        return x, state, _joined
    size = state.sizes_like(x)
    source = None if state.source is None else state.source[:, prefix:]
    prefix_x, prefix_size = x[:, :prefix], size[:, :prefix]
    prefix_source = None if state.source is None else \
        state.source[:, :prefix]

    def join(patches: Tensor,
             patch_state: TokenState) -> Tuple[Tensor, TokenState]:
        sizes = patch_state.sizes_like(patches)
        joined_source = None
        if patch_state.source is not None:
            joined_source = torch.cat([prefix_source, patch_state.source], 1)
        return torch.cat([prefix_x, patches], 1), TokenState(
            size=torch.cat([prefix_size.to(sizes.dtype), sizes], 1),
            source=joined_source, padded=patch_state.padded)

    return x[:, prefix:], TokenState(size=size[:, prefix:], source=source,
                                     padded=state.padded), join


class BlockReducer(Reducer):
    """Reduces the tokens inside a block, between attention and MLP.

    :meth:`bind` tells it the backbone's depth and its ``prefix`` tokens
    (class, distillation, registers), which it never removes: a budget and
    a capacity count the tokens after them (:meth:`patch_capacity`).
    """

    #: Whether it handles padded batches (from an input reducer that may pad)
    #: so that a clip's result is the same alone and in a batch.
    supports_padding = False
    #: Whether clips may leave a block with different numbers of tokens
    #: (an adaptive budget): a batch is then packed
    #: (:mod:`mmtokred.ops.packed`).
    variable_length = False
    prefix = 0

    def bind(self, depth: int, prefix: int = 0) -> None:
        """Called once by the backbone, at build time: its depth and how
        many prefix tokens come before the patch tokens."""
        self.depth, self.prefix = depth, prefix

    def requested(self, block_index: int) -> int:
        """Tokens block ``block_index`` is configured to remove. The default
        claims none; reducers with a budget override it and
        :meth:`patch_capacity`, so that the backbone checks the budget."""
        return 0

    def patch_capacity(self, patches: int) -> int:
        """The most tokens a block can remove of ``patches`` tokens after
        the prefix."""
        return patches

    def capacity(self, block_index: int, tokens: int) -> int:
        """The most tokens block ``block_index`` can remove of ``tokens``
        (prefix included)."""
        return max(self.patch_capacity(tokens - self.prefix), 0)

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        """In closed form (:mod:`.costs`): its own multiply-accumulates in a
        block that removes ``removed`` (> 0) of ``tokens``, and whether the
        tokens then carry sizes. The default: none, sizes."""
        return 0, True

    def capacity_note(self) -> str:
        """What else than ``r`` bounds the capacity, for the error that
        refuses a budget ('' where nothing does)."""
        return ''

    def removal(self, block_index: int, tokens: int) -> int:
        """Tokens block ``block_index`` removes of ``tokens``: the budget,
        capped at the capacity (the backbone reports every cap)."""
        return min(self.requested(block_index),
                   self.capacity(block_index, tokens))

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        """Return the reduced tokens of block ``block_index``.

        Args:
            x: tokens ``(B, N, C)`` after the attention residual, the prefix
                first.
            attn: that block's attention inputs.
            state: what the tokens stand for (``size`` None: all ones).
            block_index: position of the block, from 0.
        """
        if state.lengths is None and self.variable_length and x.shape[0] > 1:
            # Clips will leave with different lengths: packed from here on.
            x, state = pack_equal(x, state)
            attn = attn.packed()
        if state.lengths is not None:
            return self.forward_packed(x, attn, state, block_index)
        r = self.removal(block_index, x.shape[1])
        if r == 0:
            return x, state
        return self.reduce(x, attn, state, block_index, r)

    def forward_packed(self, x: Tensor, attn: AttentionInputs,
                       state: TokenState,
                       block_index: int) -> Tuple[Tensor, TokenState]:
        """:meth:`forward` of a packed batch: each clip reduced on its own,
        as it would be alone (its own budget cap; an empty clip stays
        empty), packed again."""
        if self.requested(block_index) == 0:  # no clip loses a token here
            return x, state
        out = [self.forward(*clip, block_index) if clip[0].shape[1] else
               (clip[0], clip[2]) for clip in packed_clips(x, attn, state)]
        return packed_cat(*zip(*out))

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        """Remove ``r`` (> 0, within the capacity) tokens of ``x``."""
        raise NotImplementedError

    def without_prefix(self, x: Tensor,
                       state: TokenState) -> Tuple[Tensor, TokenState, Join]:
        """The tokens after the prefix, their state, and the function that
        joins the prefix back (:func:`split_prefix`)."""
        return split_prefix(x, state, self.prefix)


def packed_clips(x: Tensor, attn: AttentionInputs, state: TokenState
                 ) -> List[Tuple[Tensor, AttentionInputs, TokenState]]:
    """Each clip's tokens, attention inputs and state of a packed batch
    (views), as a block reducer takes one clip alone."""
    lengths = state.lengths

    def clips(t: Optional[Tensor], dim: int = 1) -> List:
        return [None] * len(lengths) if t is None else \
            split_clips(t, lengths, dim)

    return [(x_i, AttentionInputs(q, k, v, attn.scale, bias),
             TokenState(size=size, source=source))
            for x_i, q, k, v, bias, size, source in zip(
                clips(x), clips(attn.q, 2), clips(attn.k, 2),
                clips(attn.v, 2), clips(attn.key_bias), clips(state.size),
                clips(state.source))]
