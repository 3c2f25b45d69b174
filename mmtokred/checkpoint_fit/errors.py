"""The errors that stop a tool whose checkpoint is not there or does not
fit, and the tools' way of ending on them."""
import contextlib
import os
from typing import Iterator


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded into the model: the tools stop with
    the message (:func:`exit_on_checkpoint_error`)."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint leaves tensors of the model unloaded, or holds tensors
    the model has no place for."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """A local checkpoint file that is not there."""


def require_file(filename: str) -> None:
    """Raise :class:`CheckpointNotFound` for a local path (not a URL such as
    ``https://`` or ``open-mmlab://``) that is no file."""
    if '://' not in str(filename) and not os.path.isfile(filename):
        raise CheckpointNotFound(
            f'checkpoint {filename}: no such file'
            + (' (a directory)' if os.path.isdir(filename) else '')
            + '; pass an existing file or a URL')


@contextlib.contextmanager
def exit_on_checkpoint_error() -> Iterator[None]:
    """A tool's main: a checkpoint that is not there or does not fit ends
    it with the message (exit status 1), not a traceback."""
    try:
        yield
    except CheckpointError as error:
        raise SystemExit(f'error: {error}') from None
