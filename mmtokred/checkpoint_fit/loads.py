"""mmengine's loads, checked: ``load_from``, ``resume``, an ``init_cfg`` of
type ``Pretrained`` and :func:`load_checkpoint` go through :func:`check
<.fit.check>`."""
import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from torch import nn

from .errors import require_file
from .fit import Fit, PartialLoad, check, check_partial_load


@dataclass
class _Checking:
    partial_load: PartialLoad
    root: Optional[nn.Module]
    source: str
    fits: List[Tuple[str, Fit]]


_active: List[_Checking] = []


def _place(module: nn.Module, root: Optional[nn.Module]) -> str:
    """``module``'s name in ``root`` and a dot ('' for the root itself)."""
    if root is None:
        return ''
    for name, candidate in root.named_modules():
        if candidate is module:
            return name + '.' if name else ''
    return ''


def _checked_load_state_dict(original):

    def load_state_dict(module, state_dict, strict=False, logger=None):
        if not _active:
            return original(module, state_dict, strict, logger)
        from mmengine.logging import print_log
        from mmengine.model import is_model_wrapper
        checking = _active[-1]
        inner = module.module if is_model_wrapper(module) else module
        fit = check(inner, state_dict, checking.source,
                    checking.partial_load, _place(inner, checking.root))
        checking.fits.append((checking.source, fit))
        if fit.partial:  # a partial load says so, in one line
            print_log(fit.line(checking.source), logger='current')
        # The fit's line replaces mmengine's warning of every key.
        return original(module, state_dict, strict, 'silent')

    load_state_dict._mmtokred_checked = True
    return load_state_dict


def _install() -> None:
    """Route mmengine's ``load_state_dict`` (the one every loader of
    mmengine calls, looked up at call time) through the check
    (idempotent); outside :func:`checked_loads` it is mmengine's own."""
    from mmengine.runner import checkpoint
    if not getattr(checkpoint.load_state_dict, '_mmtokred_checked', False):
        checkpoint.load_state_dict = _checked_load_state_dict(
            checkpoint.load_state_dict)


@contextlib.contextmanager
def checked_loads(partial_load: PartialLoad = None,
                  root: Optional[nn.Module] = None,
                  source: str = 'the checkpoint'
                  ) -> Iterator[List[Tuple[str, Fit]]]:
    """Within, every mmengine load is checked (:func:`check`); yields the
    list of ``(source, fit)`` of the loads. ``root``: the model whose
    submodules are loaded (names in messages and ``partial_load`` are
    its). A partial load logs its line."""
    check_partial_load(partial_load)
    _install()
    checking = _Checking(partial_load, root, source, [])
    _active.append(checking)
    try:
        yield checking.fits
    finally:
        _active.remove(checking)


def load_checkpoint(model: nn.Module, filename: str,
                    partial_load: PartialLoad = None) -> Fit:
    """mmengine's ``load_checkpoint`` into ``model`` (files, URLs), checked:
    the fit, or :class:`CheckpointMismatch` (:class:`CheckpointNotFound`
    for a local file that is not there)."""
    from mmengine.runner import load_checkpoint as mmengine_load
    require_file(filename)
    with checked_loads(partial_load, model, str(filename)) as fits:
        mmengine_load(model, filename, map_location='cpu', logger='silent')
    return fits[-1][1]
