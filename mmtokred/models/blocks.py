"""Thin patches of mmaction's VideoMAE attention and block.

The backbone swaps the classes of its stock modules to these subclasses
(as ToMe does), so parameters and state-dict keys stay exactly the stock ones.
Their matrix products (qkv, proj and the MLP's) take the fp32 CPU path of
:mod:`mmtokred.ops.linear`; on its 'aten' path they are stock's calls.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmaction.models.backbones.vit_mae import Attention, Block
from mmcv.cnn.bricks.transformer import FFN
from torch import Tensor

from ..ops import TokenState, attention
from ..ops.checks import check_int
from ..ops.linear import (capturing_graph, chain_with_linear, cpu_linear,
                          has_forward_hooks, linear, linear_module)
from ..ops.packed_attention import packed_attention
from ..reducers import AttentionInputs, BlockReducer


def check_heads(embed_dims: int, num_heads: int, prefix: str = '') -> None:
    """``num_heads`` must be a positive integer that divides the width
    ``embed_dims``: attention splits the width into equal heads (stock
    Attention would build with ``embed_dims // num_heads`` and fail only at
    the first forward's reshape). ``prefix`` (``'decoder.'``) names the
    fields as a config writes them."""
    check_int(f'{prefix}embed_dims', embed_dims, 1)
    check_int(f'{prefix}num_heads', num_heads, 1)
    if embed_dims % num_heads:
        divisors = [d for d in range(1, embed_dims + 1) if embed_dims % d == 0]
        raise ValueError(
            f'{prefix}num_heads must divide {prefix}embed_dims={embed_dims} '
            f'(one of {divisors}), got {prefix}num_heads={num_heads}')


class FusedAttention(Attention):
    """mmaction's Attention through ``scaled_dot_product_attention``.

    Same weights and result; no ``(B, H, N, N)`` matrix is materialised.
    """

    def forward(self,
                x: Tensor,
                key_bias: Optional[Tensor] = None,
                lengths: Optional[Sequence[int]] = None
                ) -> Tuple[Tensor, AttentionInputs]:
        """Attend over ``x`` ``(B, N, C)``, adding ``key_bias`` ``(B, N)``
        (log size, padding) to the logits of each key. With ``lengths``,
        ``x`` is a packed batch ``(1, sum(lengths), C)`` and each clip
        attends to itself only.

        Returns:
            The attention output ``(B, N, C)`` and what it attended with,
            for token reducers.
        """
        B, N, C = x.shape
        if hasattr(self, 'q_bias'):
            qkv_bias = torch.cat(
                (self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = linear(x, self.qkv.weight, qkv_bias)
        else:
            qkv = linear_module(self.qkv, x)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads,
                              -1).permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop.p if self.training else 0.
        if lengths is None:
            x = attention(q, k, v, self.scale, key_bias, dropout_p)
        else:
            x = packed_attention(q, k, v, self.scale, lengths, key_bias,
                                 dropout_p)
        x = self.proj_drop(
            linear_module(self.proj, x.transpose(1, 2).reshape(B, N, C)))
        return x, AttentionInputs(q, k, v, self.scale, key_bias)


class ReducibleBlock(Block):
    """mmaction's pre-norm Block with a token reducer before the MLP.

    The backbone calls it as ``block(x, state, reducer=..., block_index=...,
    proportional_attention=...)``: forward pre-hooks see the tokens and
    their state as ``args[0]`` and ``args[1]``, forward hooks the returned
    ``(x, state)``.
    """

    def forward(self,
                x: Tensor,
                state: TokenState,
                reducer: Optional[BlockReducer] = None,
                block_index: int = 0,
                proportional_attention: bool = False
                ) -> Tuple[Tensor, TokenState]:
        """Run the block on ``x`` ``(B, N, C)`` (packed: ``(1, sum, C)``, see
        ``state.lengths``); ``reducer`` may shrink N."""
        gamma_1 = getattr(self, 'gamma_1', None)
        gamma_2 = getattr(self, 'gamma_2', None)
        key_bias = state.key_bias(proportional_attention)
        attn, inputs = self.attn(self.norm1(x), key_bias, state.lengths)
        x = x + self.drop_path(attn if gamma_1 is None else gamma_1 * attn)
        if reducer is not None:
            x, state = reducer(x, inputs, state, block_index)
        del inputs  # frees q, k, v before the MLP: a lower peak
        mlp = self._mlp(self.norm2(x))
        x = x + self.drop_path(mlp if gamma_2 is None else gamma_2 * mlp)
        return x, state

    def _mlp(self, x: Tensor) -> Tensor:
        """``self.mlp(x)``, mmcv's FFN, with its linears through
        :func:`~mmtokred.ops.linear.linear_module` where the oneDNN path
        is on (FFN.forward's steps, unless hooks watch its modules)."""
        ffn = self.mlp
        if (cpu_linear() == 'aten' or capturing_graph()
                or type(ffn).forward is not FFN.forward
                or any(has_forward_hooks(m) for m in ffn.modules())):
            return ffn(x)
        out = ffn.dropout_layer(ffn.gamma2(chain_with_linear(ffn.layers, x)))
        return x + out if ffn.add_identity else out
