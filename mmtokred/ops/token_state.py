"""What each token stands for, tracked in one place through the blocks."""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .lengths import clip_index

#: The attention bias of a padding key. Finite in every precision (fp16's
#: largest is 65504), so a flash kernel's tile of padded keys alone has a
#: finite maximum and never computes -inf - (-inf) = NaN; and so far below
#: any real logit that exp() of it is 0 in every precision.
PADDING_BIAS = -1e4


@dataclass
class TokenState:
    """Bookkeeping that travels with a batch of tokens ``(B, N, C)``.

    Attributes:
        size: ``(B, N, 1)`` number of input patches each token stands for
            (0 for padding), or None while every token is one patch.
        source: ``(B, N, N0)`` 0/1 map of the input patches each token holds,
            or None when not tracked (it costs ``N * N0`` per clip).
        padded: whether some tokens are padding (size 0) that attention must
            not attend to.
        lengths: set when the batch is packed (:mod:`.packed`): the tokens
            are ``(1, sum(lengths), C)``, clip after clip, and ``size`` and
            ``source`` are packed alike.
    """
    size: Optional[Tensor] = None
    source: Optional[Tensor] = None
    padded: bool = False
    lengths: Optional[Tuple[int, ...]] = None

    def sizes_like(self, x: Tensor) -> Tensor:
        """``size``, or ones of shape ``(B, N, 1)`` when not tracked yet."""
        if self.size is not None:
            return self.size
        return x.new_ones(x.shape[0], x.shape[1], 1)

    def key_bias(self, proportional: bool) -> Optional[Tensor]:
        """The ``(B, N)`` attention bias of each key (fp32), or None for
        none.

        Proportional attention adds log(size) so a merged token weighs as
        much as the patches it replaced; padding gets ``PADDING_BIAS`` so it
        receives no attention.
        """
        if self.size is None or not (proportional or self.padded):
            return None
        size = self.size[..., 0].float()
        bias = size.clamp(min=1e-6).log() if proportional else \
            torch.zeros_like(size)
        return bias.masked_fill(size == 0, PADDING_BIAS)

    def pool(self, x: Tensor) -> Tensor:
        """Mean over tokens, weighted by size so every input patch counts once.

        Without sizes this is ``x.mean(1)``, bit for bit. Packed: ``(B, C)``,
        one mean per clip.
        """
        if self.lengths is not None:
            return packed_weighted_mean(x, self.size, self.lengths)
        if self.size is None:
            return x.mean(1)
        return weighted_mean(x, self.size)


def weighted_mean(x: Tensor, size: Tensor) -> Tensor:
    """Mean of ``x`` ``(B, N, C)`` over tokens weighted by ``size``
    ``(B, N, 1)``, in ``x``'s dtype. The sum runs in fp32 (or wider): in
    fp16 the sum over ViT-B's 1568 tokens of a channel whose mean passes
    about 42 is past fp16's largest number, though the mean is not."""
    wide = torch.promote_types(x.dtype, torch.float32)
    size = size.to(wide)
    return ((x.to(wide) * size).sum(1) / size.sum(1)).to(x.dtype)


def packed_weighted_mean(x: Tensor, size: Optional[Tensor],
                         lengths: Sequence[int]) -> Tensor:
    """``(B, C)`` mean of each clip's tokens of the packed ``x``
    ``(1, sum, C)``, weighted by ``size`` ``(1, sum, 1)`` (None: each token
    one patch), in ``x``'s dtype with an fp32 sum, as
    :func:`~mmtokred.ops.token_state.weighted_mean` pools one clip. A clip
    without tokens has no mean: its row is NaN, never a silent zero."""
    wide = torch.promote_types(x.dtype, torch.float32)
    if size is None:
        size = x.new_ones(*x.shape[:2], 1)
    size = size.to(wide)
    clip = clip_index(lengths, x.device)
    channels = x.shape[-1]
    sums = x.new_zeros(len(lengths), channels, dtype=wide).index_add_(
        0, clip, (x[0].to(wide) * size[0]))
    weights = size.new_zeros(len(lengths)).index_add_(0, clip, size[0, :, 0])
    return (sums / weights[:, None]).to(x.dtype)
