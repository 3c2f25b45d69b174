"""A process-wide choice among kernels: from an environment variable, then
by a setter or for the duration of a ``with`` block; and, where it is left
'auto', the choice a measurement made per device type and dtype."""
import contextlib
import os
from typing import Dict, Iterator, Optional, Tuple

import torch


class KernelSetting:
    """The setting of one kernel choice.

    Args:
        env: the environment variable that sets it for a process.
        choices: the allowed settings; the first is the default ('auto'
            where measurements may choose).
    """

    def __init__(self, env: str, choices: Tuple[str, ...]) -> None:
        self.env = env
        self.choices = choices
        self.value = self.check(env, os.environ.get(env, choices[0]))
        #: (device type, dtype) -> the choice measured fastest there.
        self.measured: Dict[Tuple[str, torch.dtype], str] = {}

    def check(self, name: str, kernel: object) -> str:
        """``kernel`` if allowed, else a ValueError naming ``name``."""
        if kernel not in self.choices:
            raise ValueError(f'{name} must be one of {self.choices}, got '
                             f'{kernel!r}')
        return kernel

    def set(self, kernel: str) -> str:
        """Set it for this process; returns the previous setting."""
        previous, self.value = self.value, self.check('kernel', kernel)
        return previous

    @contextlib.contextmanager
    def set_to(self, kernel: str) -> Iterator[None]:
        """:meth:`set` for the duration of a ``with`` block."""
        previous = self.set(kernel)
        try:
            yield
        finally:
            self.set(previous)

    def record(self, device: torch.device, dtype: torch.dtype,
               kernel: Optional[str]) -> None:
        """Record ``kernel`` as measured fastest on ``device``'s type in
        ``dtype``; None forgets the record."""
        key = (torch.device(device).type, dtype)
        if kernel is None:
            self.measured.pop(key, None)
        elif self.check('kernel', kernel) == self.choices[0]:
            raise ValueError(f'record a measured choice, not '
                             f'{self.choices[0]!r}')
        else:
            self.measured[key] = kernel

    def chosen(self, device: torch.device, dtype: torch.dtype,
               rule: str) -> Tuple[str, str]:
        """What runs on ``device`` in ``dtype`` and why: the setting, else
        the measured choice, else ``rule``."""
        if self.value != self.choices[0]:
            return self.value, f'set by {self.env} or its setter'
        measured = self.measured.get((torch.device(device).type, dtype))
        if measured is not None:
            return measured, 'auto: measured fastest here in this process'
        return rule, 'auto, not measured in this process: the rule'
