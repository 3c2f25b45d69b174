"""What a block's attention worked on (queries, keys, values, scale and
key bias), as a block reducer receives it."""
from typing import NamedTuple, Optional

from torch import Tensor


class AttentionInputs(NamedTuple):
    """What a block's attention worked on, for the reducer of that block."""
    q: Tensor  #: (B, H, N, D)
    k: Tensor  #: (B, H, N, D)
    v: Tensor  #: (B, H, N, D)
    scale: float  #: multiplier of the dot products
    key_bias: Optional[Tensor]  #: (B, N) added to the logits, or None

    @property
    def metric(self) -> Tensor:
        """The keys averaged over heads ``(B, N, D)``: ToMe's similarity."""
        return self.k.mean(1)

    def packed(self) -> 'AttentionInputs':
        """These inputs of a batch of clips of one length, packed as
        :func:`~mmtokred.ops.packed.pack_equal` packs its tokens."""
        q, k, v = (t.transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[-1])
                   for t in (self.q, self.k, self.v))
        bias = None if self.key_bias is None else self.key_bias.reshape(1, -1)
        return AttentionInputs(q, k, v, self.scale, bias)

    def class_attention(self) -> Tensor:
        """``(B, H, N)`` attention the class token (token 0) pays to every
        token, key bias included, in fp32: O(N), the full matrix is never
        formed."""
        logits = (self.q[:, :, :1] * self.scale) @ self.k.transpose(-2, -1)
        logits = logits[:, :, 0].float()
        if self.key_bias is not None:
            logits = logits + self.key_bias[:, None].float()
        return logits.softmax(-1)
