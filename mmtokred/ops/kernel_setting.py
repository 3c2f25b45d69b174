"""A process-wide choice among kernels: from an environment variable, then
by a setter or for the duration of a ``with`` block."""
import contextlib
import os
from typing import Iterator, Tuple


class KernelSetting:
    """The setting of one kernel choice.

    Args:
        env: the environment variable that sets it for a process.
        choices: the allowed settings; the first is the default.
    """

    def __init__(self, env: str, choices: Tuple[str, ...]) -> None:
        self.env = env
        self.choices = choices
        self.value = self.check(env, os.environ.get(env, choices[0]))

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
