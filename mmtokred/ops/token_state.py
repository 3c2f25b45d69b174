"""What each token stands for, tracked in one place through the blocks."""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


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
    """
    size: Optional[Tensor] = None
    source: Optional[Tensor] = None
    padded: bool = False

    def sizes_like(self, x: Tensor) -> Tensor:
        """``size``, or ones of shape ``(B, N, 1)`` when not tracked yet."""
        if self.size is not None:
            return self.size
        return x.new_ones(x.shape[0], x.shape[1], 1)

    def key_bias(self, proportional: bool,
                 dtype: torch.dtype) -> Optional[Tensor]:
        """The ``(B, N)`` attention bias of each key, or None for none.

        Proportional attention adds log(size) so a merged token weighs as
        much as the patches it replaced; padding gets a large negative bias
        so it receives no attention.
        """
        if self.size is None or not (proportional or self.padded):
            return None
        size = self.size[..., 0]
        floor = torch.finfo(dtype).min / 4  # exp() is 0, sums stay finite
        if proportional:
            return torch.where(size > 0, size.clamp(min=1e-6).log(),
                               torch.full_like(size, floor))
        return torch.where(size > 0, torch.zeros_like(size),
                           torch.full_like(size, floor))

    def pool(self, x: Tensor) -> Tensor:
        """Mean over tokens, weighted by size so every input patch counts once.

        Without sizes this is ``x.mean(1)``, bit for bit.
        """
        if self.size is None:
            return x.mean(1)
        size = self.size.to(x.dtype)
        return (x * size).sum(1) / size.sum(1)
