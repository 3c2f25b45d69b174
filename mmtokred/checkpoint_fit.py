"""Whether a checkpoint fits the model it is loaded into: one check for
every tool.

mmengine loads checkpoints non-strictly: a checkpoint of another model loads
none of its tensors, logs a warning of every key and the run goes on with
the weights as initialised. Here every load is compared first: each tensor
of the model must come from the checkpoint with its shape, and each tensor
of the checkpoint must have its place in the model (a checkpoint of a deeper
model would otherwise fill the first blocks silently). A load that does not
match stops, naming how many tensors matched, the first mismatches and the
model the checkpoint seems to be of, unless the user opted in to a partial
load (``partial_load``): True (anything may differ, but something must load)
or the names or patterns of the tensors that may stay as initialised or go
unused (``['cls_head']`` for a fine-tune whose head is new).

- :func:`check` compares a state dict with a module and raises
  :class:`CheckpointMismatch`; the timm loader calls it.
- :func:`checked_loads` puts that check under mmengine's ``load_state_dict``
  for a block of code: ``load_from``, ``resume`` and an ``init_cfg`` of
  type ``Pretrained`` all go through it. The Runner of ``tools/test.py``
  and ``tools/train.py`` runs inside it (:mod:`mmtokred.console`).
- :func:`load_checkpoint`, mmengine's loader checked: every other tool.
"""
import contextlib
import fnmatch
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

from torch import Tensor, nn

#: ``partial_load``: None or False (every tensor must load), True (any may
#: stay as initialised) or names and patterns of those that may.
PartialLoad = Union[None, bool, Sequence[str]]

#: Mismatches named in an error.
SHOWN = 5


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


@dataclass
class Fit:
    """How a checkpoint's tensors meet a model's."""
    model: str
    #: Tensors of the model, in its order.
    total: int
    loaded: List[str] = field(default_factory=list)
    #: Tensors of the model the checkpoint lacks.
    missing: List[str] = field(default_factory=list)
    #: ``(name, checkpoint shape, model shape)``.
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    #: Checkpoint tensors the model has no place for.
    unused: List[str] = field(default_factory=list)

    @property
    def unloaded(self) -> List[str]:
        return self.missing + [name for name, _, _ in self.mismatched]

    def counts(self) -> str:
        return (f'{len(self.loaded)} of {self.total} tensors of {self.model} '
                f'loaded')

    @property
    def partial(self) -> bool:
        return bool(self.unloaded or self.unused)

    def line(self, source: str) -> str:
        """One line on what loaded."""
        line = f'checkpoint {source} (partial load): {self.counts()}'
        if self.unloaded:
            line += (f'; {len(self.unloaded)} left as initialised: '
                     f'{_names(self.unloaded)}')
        if self.unused:
            line += (f'; {len(self.unused)} of the checkpoint unused: '
                     f'{_names(self.unused)}')
        return line


def _names(names: Sequence[str], shown: int = SHOWN) -> str:
    more = len(names) - shown
    return ', '.join(names[:shown]) + (f' and {more} more' if more > 0 else
                                       '')


def compare(model: nn.Module, state_dict: Mapping[str, Tensor],
            prefix: str = '') -> Fit:
    """How ``state_dict`` meets ``model.state_dict()``; names in the fit are
    the model's, after ``prefix`` (the module's place in a larger one)."""
    own = {name: tensor for name, tensor in model.state_dict().items()
           if not name.endswith('num_batches_tracked')}
    fit = Fit(type(model).__name__, len(own))
    for name, tensor in own.items():
        if name not in state_dict:
            fit.missing.append(prefix + name)
        elif tuple(state_dict[name].shape) != tuple(tensor.shape):
            fit.mismatched.append((prefix + name,
                                   tuple(state_dict[name].shape),
                                   tuple(tensor.shape)))
        else:
            fit.loaded.append(prefix + name)
    fit.unused = [prefix + name for name in state_dict if name not in own]
    return fit


def allowed(name: str, partial_load: PartialLoad) -> bool:
    """Whether ``partial_load`` lets the tensor ``name`` stay unloaded (or
    unused): a pattern (``fnmatch``) matching it or a module above it."""
    if partial_load is True:
        return True
    if not partial_load:
        return False
    if isinstance(partial_load, str):
        partial_load = [partial_load]
    return any(fnmatch.fnmatchcase(name, pattern)
               or name.startswith(pattern.rstrip('.*') + '.')
               for pattern in partial_load)


def check_partial_load(partial_load: PartialLoad) -> None:
    """``partial_load`` is None, a bool, or a list of names."""
    names = [partial_load] if isinstance(partial_load, str) else partial_load
    ok = partial_load is None or isinstance(partial_load, bool) or (
        isinstance(names, (list, tuple))
        and all(isinstance(n, str) and n for n in names))
    if not ok:
        raise ValueError(
            'partial_load must be None, True or a list of tensor names or '
            f"patterns that may stay unloaded or unused (['cls_head']), got "
            f'{partial_load!r}')


def check_fit(fit: Fit, state_dict: Mapping[str, Tensor], source: str,
              partial_load: PartialLoad = None) -> None:
    """Raise :class:`CheckpointMismatch` unless every tensor of the model
    loads and every tensor of the checkpoint is used, or those that do not
    are let by ``partial_load`` (which never lets nothing load)."""
    check_partial_load(partial_load)
    refused = [name for name in fit.unloaded + fit.unused
               if not allowed(name, partial_load)]
    if not refused and fit.loaded:
        return
    lines = [f'checkpoint {source} does not fit the model: {fit.counts()} '
             f'({len(fit.mismatched)} of another shape, {len(fit.missing)} '
             f"missing from the checkpoint; {len(fit.unused)} of the "
             "checkpoint's unused)."]
    if fit.mismatched:
        lines.append('  first of another shape: ' + '; '.join(
            f'{name} {list(theirs)} in the checkpoint, {list(ours)} in the '
            'model' for name, theirs, ours in fit.mismatched[:SHOWN]))
    if fit.missing:
        lines.append('  first missing: ' + _names(fit.missing))
    if fit.unused:
        lines.append('  first unused (no place in the model): '
                     + _names(fit.unused))
    lines.append('  the checkpoint seems to be of: '
                 + describe_checkpoint(state_dict))
    if partial_load and not fit.loaded:
        lines.append('  partial_load lets tensors stay unloaded, but none of '
                     'this checkpoint fits.')
    else:
        lines.append(
            '  Load it into the model it belongs to; or, to load what fits '
            'and leave the rest as initialised, opt in to a partial load: '
            "`partial_load = ['cls_head']` in the config (the names or "
            'patterns that may stay unloaded or unused; True for any), or '
            '--partial-load [NAME ...] with tools/test.py and '
            'tools/train.py.')
    raise CheckpointMismatch('\n'.join(lines))


def check(model: nn.Module, state_dict: Mapping[str, Tensor], source: str,
          partial_load: PartialLoad = None, prefix: str = '') -> Fit:
    """:func:`compare`, then :func:`check_fit`: the fit, if it loads."""
    fit = compare(model, state_dict, prefix)
    check_fit(fit, state_dict, source, partial_load)
    return fit


# ---------------------------------------------------------------------------
# What a checkpoint seems to be of
# ---------------------------------------------------------------------------
def architecture(state_dict: Mapping[str, Tensor]) -> Dict[str, int]:
    """What the tensors of a ViT checkpoint say of its shape:
    ``embed_dims``, ``patch_size``, ``tubelet_size`` (video), ``depth``,
    ``mlp_dims`` and ``num_classes``, as far as found."""
    found: Dict[str, int] = {}
    depth = -1
    for name, tensor in state_dict.items():
        shape = tuple(getattr(tensor, 'shape', ()))
        if re.search(r'(^|\.)patch_embed\.(projection|proj)\.weight$', name):
            found['embed_dims'] = shape[0]
            found['patch_size'] = shape[-1]
            if len(shape) == 5:
                found['tubelet_size'] = shape[2]
        block = re.search(r'(^|\.)blocks\.(\d+)\.', name)
        if block:
            depth = max(depth, int(block.group(2)))
            if re.search(r'\.mlp\.(layers\.0\.0|fc1)\.weight$', name):
                found['mlp_dims'] = shape[0]
        if re.search(r'(^|\.)(cls_head\.fc_cls|head)\.weight$', name):
            found['num_classes'] = shape[0]
    if depth >= 0:
        found['depth'] = depth + 1
    return found


#: The configs of the checkout mmtokred runs from (absent when it is
#: installed without them).
CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


@functools.lru_cache(maxsize=None)
def config_architecture(path: Path) -> Dict[str, int]:
    """The settings of :func:`architecture` a config's model has."""
    from mmengine.config import Config
    model = Config.fromfile(str(path)).get('model') or {}
    backbone = model.get('backbone') or {}
    head = model.get('cls_head') or {}
    keys = ('embed_dims', 'patch_size', 'tubelet_size', 'depth')
    found = {key: backbone[key] for key in keys if key in backbone}
    if 'embed_dims' in found and 'mlp_ratio' in backbone:
        found['mlp_dims'] = int(found['embed_dims'] * backbone['mlp_ratio'])
    if 'num_classes' in head:
        found['num_classes'] = head['num_classes']
    return found


def matching_configs(shape: Dict[str, int],
                     configs: Path = CONFIGS) -> List[str]:
    """The configs under ``configs`` whose model has the ``shape`` a
    checkpoint shows (every setting both name agrees)."""
    matches = []
    for path in sorted(configs.rglob('*.py')) if configs.is_dir() else []:
        try:
            theirs = config_architecture(path)
        except Exception:  # noqa: BLE001  a config that does not load
            continue
        common = set(theirs) & set(shape)
        if {'embed_dims', 'depth'} <= common and all(
                theirs[key] == shape[key] for key in common):
            matches.append(str(path.relative_to(configs.parent)))
    return matches


def describe_checkpoint(state_dict: Mapping[str, Tensor]) -> str:
    """The checkpoint's shape in words, and the shipped configs of it."""
    shape = architecture(state_dict)
    if not shape:
        return (f'no ViT ({len(state_dict)} tensors, first '
                f'{_names(list(state_dict), 3) or "none"})')
    words = ', '.join(f'{key} {value}' for key, value in shape.items())
    configs = matching_configs(shape)
    if configs:
        return f'a ViT with {words}, as in {_names(configs, 3)}'
    return f'a ViT with {words} (no shipped config has that shape)'


# ---------------------------------------------------------------------------
# mmengine's loads, checked
# ---------------------------------------------------------------------------
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


@contextlib.contextmanager
def exit_on_checkpoint_error() -> Iterator[None]:
    """A tool's main: a checkpoint that is not there or does not fit ends
    it with the message (exit status 1), not a traceback."""
    try:
        yield
    except CheckpointError as error:
        raise SystemExit(f'error: {error}') from None
