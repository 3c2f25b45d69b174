"""How mmtokred loads checkpoints: with torch's safe loading, always.

A checkpoint is unpickled with ``weights_only=True`` (tensors and plain
containers, never code), allowing besides exactly the classes that the
checkpoints mmtokred reads hold: those of mmengine's Runner (HistoryBuffer,
numpy scalars and arrays in their meta), the ``argparse.Namespace`` that
timm's ``train.py`` stores, and the classes a user names in
``MMTOKRED_SAFE_GLOBALS`` (never functions, never classes of modules that
run code or touch files). The allowance lasts for one load: torch's default
stays as it is. A file that is refused raises an error that says why and,
for a class, how to allow it.

:func:`load` is that load (the timm loader, :mod:`mmtokred.timm.checkpoint`,
uses it); :func:`patch_checkpoint_loader` puts the same policy under
mmengine's ``CheckpointLoader``, the workaround for mmengine passing no
``weights_only`` (:mod:`mmtokred.upstream_fixes`, section 2).
"""
import argparse
import contextlib
import importlib
import os
import pickle
import re
import sys
import urllib.error
from typing import Iterator, List, Optional

import numpy as np
import torch

#: Environment variable naming extra classes (``module.Class``, comma
#: separated) that checkpoints may contain. For trusted files only.
EXTRA_SAFE_GLOBALS_ENV = 'MMTOKRED_SAFE_GLOBALS'

#: Modules whose classes run code or touch files and processes when called,
#: as unpickling calls what it names (``subprocess.Popen(...)``,
#: ``io.FileIO(path, 'w')``): never allowed, even when named.
UNSAFE_MODULES = frozenset({
    'builtins', 'os', 'posix', 'nt', 'subprocess', 'sys', 'io', 'shutil',
    'importlib', 'runpy', 'pty', 'socket', 'ctypes', 'code', 'codeop',
    'multiprocessing', 'pickle', 'marshal', 'types', 'tempfile', 'pathlib',
    'webbrowser', 'functools', 'operator'
})


def _history_buffer_statistic(owner: object, name: str) -> object:
    """Stands in for ``getattr`` while unpickling, for HistoryBuffer only.

    HistoryBuffer pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing the real getattr would let a
    file reach any attribute of anything.
    """
    from mmengine.logging import HistoryBuffer
    statistics = {'min', 'max', 'current', 'mean'}  # registered lazily
    statistics.update(HistoryBuffer._statistics_methods)
    if (owner is HistoryBuffer
            or isinstance(owner, HistoryBuffer)) and name in statistics:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({owner!r}, {name!r}) while loading a checkpoint: '
        'only the statistics methods of HistoryBuffer are allowed')


def runner_checkpoint_globals() -> List[object]:
    """The classes a checkpoint written by mmengine's Runner may hold."""
    from mmengine.logging import HistoryBuffer
    numpy2 = np.lib.NumpyVersion(np.__version__) >= '2.0.0'
    multiarray = importlib.import_module(
        'numpy._core.multiarray' if numpy2 else 'numpy.core.multiarray')
    numeric_dtypes = [
        type(np.dtype(code)) for code in '?bhilqBHILQefdgFDGU'
    ]
    return [
        HistoryBuffer, multiarray.scalar, multiarray._reconstruct, np.ndarray,
        np.dtype, *numeric_dtypes,
        (_history_buffer_statistic, 'builtins.getattr')
    ]


def resolve_global(name: str) -> object:
    """The object ``module.attr`` names (ImportError, AttributeError or
    ValueError where there is none)."""
    module_name, _, attr = name.rpartition('.')
    if not module_name:
        raise ValueError('no module given')
    return getattr(importlib.import_module(module_name), attr)


def unsafe_global_reason(name: str, obj: object) -> Optional[str]:
    """Why a checkpoint must not be allowed to call ``obj`` (named
    ``name``); None for a class of a module that is not unsafe."""
    if not isinstance(obj, type):
        return (f'{name} is a {type(obj).__name__}, not a class: a '
                'checkpoint that names it asks to run it while loading')
    root = (getattr(obj, '__module__', None) or name).split('.')[0]
    if root in UNSAFE_MODULES or name.split('.')[0] in UNSAFE_MODULES:
        return (f'{name} is a class of the module {root}, whose classes run '
                'code or touch files and processes when a checkpoint calls '
                'them')
    return None


def _extra_safe_globals() -> List[object]:
    names = [
        name.strip()
        for name in os.environ.get(EXTRA_SAFE_GLOBALS_ENV, '').split(',')
        if name.strip()
    ]
    extra = []
    for name in names:
        try:
            obj = resolve_global(name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f'{EXTRA_SAFE_GLOBALS_ENV} names {name!r}, which cannot be '
                f'imported: expected module.Class ({error})') from error
        reason = unsafe_global_reason(name, obj)
        if reason is not None:
            raise ValueError(f'{EXTRA_SAFE_GLOBALS_ENV} names {name!r}, '
                             f'which is refused: {reason}. Only data classes '
                             'may be allowed.')
        extra.append(obj)
    return extra


@contextlib.contextmanager
def safe_checkpoint_globals() -> Iterator[None]:
    """Allow the classes above, for the duration of a load (torch < 2.5,
    without ``safe_globals``, allows none of them)."""
    if not hasattr(torch.serialization, 'safe_globals'):
        yield
        return
    with torch.serialization.safe_globals(
            runner_checkpoint_globals() + [argparse.Namespace] +
            _extra_safe_globals()):
        yield


def _refused_global(error: Exception) -> Optional[str]:
    """The ``module.attr`` that torch's safe unpickler refused, if named."""
    match = re.search(r'GLOBAL ([\w.]+)', str(error))
    if match is None:
        return None
    # torch names builtins without their module ("GLOBAL eval").
    name = match.group(1)
    return name if '.' in name else f'builtins.{name}'


def explain_load_failure(filename: str, error: Exception) -> Exception:
    """The error to raise for ``error``, raised loading ``filename``: a
    refused global said to be unsafe, or how to allow a class; a failed
    download with the way out; any other error as it is."""
    if isinstance(error, pickle.UnpicklingError):
        name = _refused_global(error)
        module = None if name is None else name.rpartition('.')[0]
        if name is None:
            reason = None
        elif name.split('.')[0] in UNSAFE_MODULES:
            reason = f'{name} belongs to the module {module}, never allowed'
        elif module in sys.modules:  # never import what a file names
            obj = getattr(sys.modules[module], name.rpartition('.')[2], None)
            reason = unsafe_global_reason(name, obj)
        else:
            reason = None  # unknown until imported: a class, maybe
        known_class = reason is None and module in sys.modules
        if name is None or reason is not None:
            return pickle.UnpicklingError(
                f'Refusing to load the checkpoint {filename}: it names '
                f'{name or "an object"} that safe loading (torch.load with '
                f'weights_only=True) does not allow ({reason or error}). '
                'Checkpoints of mmaction2, mmengine\'s Runner and timm never '
                'do; do not load this file unless you know what wrote it.')
        return pickle.UnpicklingError(
            f'Checkpoint {filename} holds '
            f'{"the class " if known_class else ""}{name}, which safe '
            'loading (torch.load with weights_only=True) does not allow '
            '(mmtokred allows only what mmengine\'s Runner and timm write). '
            f'If {"" if known_class else "it is a class and "}'
            'you trust this file, allow it for mmtokred\'s loads with '
            f'`export {EXTRA_SAFE_GLOBALS_ENV}={name}` (comma separated for '
            'more; only classes are accepted).')
    if filename.startswith(('http://', 'https://')) and isinstance(
            error, (urllib.error.URLError, OSError)):
        return RuntimeError(
            f'Could not download the checkpoint {filename} ({error}). '
            'Download it on a machine with network access and pass the local '
            'file instead: `python tools/test.py CONFIG /path/to/file.pth` '
            '(or set `load_from` in the config).')
    return error


def load(filename: str, map_location: object = 'cpu') -> object:
    """``torch.load`` of a local file with ``weights_only=True`` and the
    classes above allowed; a refused file raises
    :func:`explain_load_failure`'s error."""
    try:
        with safe_checkpoint_globals():
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as error:
        raise explain_load_failure(str(filename), error) from error


def patch_checkpoint_loader() -> None:
    """Load every checkpoint mmengine's ``CheckpointLoader`` loads with the
    classes above allowed and failures explained (idempotent)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    if not hasattr(torch.serialization, 'safe_globals'):
        return  # torch < 2.5: full unpickling is still the default
    original = CheckpointLoader.load_checkpoint.__func__
    if getattr(original, '_mmtokred_safe', False):
        return

    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        try:
            with safe_checkpoint_globals():
                return original(cls, filename, map_location, logger)
        except (pickle.UnpicklingError, urllib.error.URLError,
                OSError) as error:
            explained = explain_load_failure(str(filename), error)
            if explained is error:
                raise
            raise explained from error

    load_checkpoint._mmtokred_safe = True
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)
