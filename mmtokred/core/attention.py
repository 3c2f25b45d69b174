"""The attention of a token-reducing block, written once for every backbone.

A backbone's attention module subclasses :class:`TokenReducingAttention`
next to its stock class and says only how it projects: its queries, keys and
values (:meth:`~TokenReducingAttention.qkv_heads`) and its output
(:meth:`~TokenReducingAttention.project`). The attention itself, with the
per-key bias (proportional attention, padding), the packed batches of clips
of different lengths, and the inputs a block reducer scores, is here.
"""
from typing import Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import attention
from ..ops.packed_attention import packed_attention
from ..reducers import AttentionInputs


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float,
           key_bias: Optional[Tensor] = None,
           lengths: Optional[Sequence[int]] = None,
           dropout_p: float = 0.) -> Tensor:
    """``softmax(scale * q k^T + key_bias) v`` of ``(B, H, N, D)`` heads;
    with ``lengths``, of each clip of the packed batch on its own."""
    if lengths is None:
        return attention(q, k, v, scale, key_bias, dropout_p)
    return packed_attention(q, k, v, scale, lengths, key_bias, dropout_p)


class TokenReducingAttention(nn.Module):
    """Multi-head attention with a key bias, packing, and its inputs handed
    to the block's reducer.

    A subclass supplies :meth:`qkv_heads`, :meth:`project` and the
    attributes ``scale`` (float) and ``attn_drop`` (a Dropout).
    """

    scale: float
    attn_drop: nn.Dropout

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``(B, H, N, D)`` of ``x`` ``(B, N, C)``
        (the heads' norms, where the backbone has them, applied)."""
        raise NotImplementedError

    def project(self, out: Tensor, x: Tensor) -> Tensor:
        """The output projection of the heads' output ``out``
        ``(B, N, H * D)`` (``x``: the attention's input, for a gate)."""
        raise NotImplementedError

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
        B, N = x.shape[:2]
        q, k, v = self.qkv_heads(x)
        dropout_p = self.attn_drop.p if self.training else 0.
        out = attend(q, k, v, self.scale, key_bias, lengths, dropout_p)
        out = self.project(out.transpose(1, 2).reshape(B, N, -1), x)
        return out, AttentionInputs(q, k, v, self.scale, key_bias)
