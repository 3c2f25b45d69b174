"""Thin patches of mmaction's VideoMAE attention and block: adapters of
:mod:`mmtokred.core`, which runs the attention and the reducer slot.

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

from ..core import TokenReducingAttention, TokenReducingBlock
from ..ops.checks import check_int
from ..ops.linear import (capturing_graph, chain_with_linear, cpu_linear,
                          has_forward_hooks, linear, linear_module)
from ..reducers import AttentionInputs


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


class FusedAttention(TokenReducingAttention, Attention):
    """mmaction's Attention through the core's attention
    (``scaled_dot_product_attention``, or packed).

    Same weights and result; no ``(B, H, N, N)`` matrix is materialised.
    """

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B, N = x.shape[:2]
        if hasattr(self, 'q_bias'):
            qkv_bias = torch.cat(
                (self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = linear(x, self.qkv.weight, qkv_bias)
        else:
            qkv = linear_module(self.qkv, x)
        return qkv.reshape(B, N, 3, self.num_heads,
                           -1).permute(2, 0, 3, 1, 4).unbind(0)

    def project(self, out: Tensor, x: Tensor) -> Tensor:
        return self.proj_drop(linear_module(self.proj, out))


class ReducibleBlock(TokenReducingBlock, Block):
    """mmaction's pre-norm Block with the core's reducer slot before the
    MLP (layer scale ``gamma_1``/``gamma_2`` where set)."""

    def attention_branch(self, x: Tensor, key_bias: Optional[Tensor],
                         lengths: Optional[Sequence[int]]
                         ) -> Tuple[Tensor, AttentionInputs]:
        gamma_1 = getattr(self, 'gamma_1', None)
        attn, inputs = self.attn(self.norm1(x), key_bias, lengths)
        return self.drop_path(attn if gamma_1 is None else gamma_1 * attn), \
            inputs

    def mlp_branch(self, x: Tensor) -> Tensor:
        gamma_2 = getattr(self, 'gamma_2', None)
        mlp = self._mlp(self.norm2(x))
        return self.drop_path(mlp if gamma_2 is None else gamma_2 * mlp)

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
