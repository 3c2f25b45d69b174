"""The pre-norm transformer block with a token reducer's slot, written once
for every backbone.

A backbone's block subclasses :class:`TokenReducingBlock` next to its stock
class and says how its two residual branches run (norm, attention or MLP,
layer scale, drop path); the order, and the reducer between the attention
residual and the MLP (where ToMe puts it), are here.
"""
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import TokenState
from ..reducers import AttentionInputs, BlockReducer


class TokenReducingBlock(nn.Module):
    """``x + attention(x)``, the reducer, ``x + mlp(x)``.

    The backbone calls it as ``block(x, state, reducer=..., block_index=...,
    proportional_attention=...)``: forward pre-hooks see the tokens and
    their state as ``args[0]`` and ``args[1]``, forward hooks the returned
    ``(x, state)``.
    """

    def attention_branch(self, x: Tensor, key_bias: Optional[Tensor],
                         lengths: Optional[Sequence[int]]
                         ) -> Tuple[Tensor, AttentionInputs]:
        """The attention residual's branch of ``x`` (norm, attention, layer
        scale, drop path) and the attention's inputs; ``key_bias`` and
        ``lengths`` as :class:`~.attention.TokenReducingAttention` takes
        them."""
        raise NotImplementedError

    def mlp_branch(self, x: Tensor) -> Tensor:
        """The MLP residual's branch of ``x`` (norm, MLP, layer scale, drop
        path)."""
        raise NotImplementedError

    def forward(self,
                x: Tensor,
                state: TokenState,
                reducer: Optional[BlockReducer] = None,
                block_index: int = 0,
                proportional_attention: bool = False
                ) -> Tuple[Tensor, TokenState]:
        """Run the block on ``x`` ``(B, N, C)`` (packed: ``(1, sum, C)``, see
        ``state.lengths``); ``reducer`` may shrink N."""
        key_bias = state.key_bias(proportional_attention)
        branch, inputs = self.attention_branch(x, key_bias, state.lengths)
        x = x + branch
        if reducer is not None:
            x, state = reducer(x, inputs, state, block_index)
        del inputs  # frees q, k, v before the MLP: a lower peak
        return x + self.mlp_branch(x), state
