"""What every token reducer offers the tools: branch counts and
observations."""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn


class Reducer(nn.Module):
    """What every token reducer offers the tools: counts of the branches an
    adaptive reducer took (e.g. PPT's pool/prune decision per clip and
    block), named in ``branches``; and, while ``observing`` is set, the
    per-clip values it decided on (e.g. PPT's statistic).

    The counts accumulate on the reducer's device (a buffer outside the
    state dict), so a forward pass never waits for the device to count;
    they become numbers only when :meth:`branch_counts` is asked.
    """

    branches: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        #: Keep what :meth:`observe` is given (off: nothing accumulates).
        self.observing = False
        self.register_buffer('branch_totals',
                             torch.zeros(len(self.branches),
                                         dtype=torch.long),
                             persistent=False)
        self.reset_counts()

    def branch_counts(self) -> Dict[str, int]:
        """How often each branch was taken since :meth:`reset_counts`."""
        return dict(zip(self.branches, self.branch_totals.tolist()))

    def observations(self) -> Dict[str, Tensor]:
        """What was observed since :meth:`reset_counts`, one 1-D tensor per
        name (values of every clip and block, in order)."""
        return {name: torch.cat(values)
                for name, values in self._observed.items()}

    def reset_counts(self) -> None:
        """Start counting branches and observing afresh."""
        self.branch_totals.zero_()
        self._observed: Dict[str, List[Tensor]] = {}

    def count(self, branch: str, times: Tensor) -> None:
        """Add ``times`` (a tensor on the reducer's device) to ``branch``."""
        self.branch_totals[self.branches.index(branch)] += times

    def observe(self, name: str, values: Tensor) -> None:
        """Keep ``values`` (detached, on their device) under ``name`` while
        ``observing``."""
        if self.observing:
            self._observed.setdefault(name, []).append(values.detach())
