"""What each token stands for, tracked in one place through the blocks."""
from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class TokenState:
    """Bookkeeping that travels with a batch of tokens ``(B, N, C)``.

    Attributes:
        size: ``(B, N, 1)`` number of input patches each token stands for, or
            None while every token is exactly one patch (no reduction yet).
    """
    size: Optional[Tensor] = None

    def pool(self, x: Tensor) -> Tensor:
        """Mean over tokens, weighted by size so every input patch counts once.

        Without sizes this is ``x.mean(1)``, bit for bit.
        """
        if self.size is None:
            return x.mean(1)
        size = self.size.to(x.dtype)
        return (x * size).sum(1) / size.sum(1)
