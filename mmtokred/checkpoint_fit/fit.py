"""How a checkpoint's tensors meet a model's, and the check that refuses
a load that does not fit."""
import fnmatch
from dataclasses import dataclass, field
from typing import List, Mapping, Sequence, Tuple, Union

from torch import Tensor, nn

from .architecture import describe_checkpoint
from .errors import CheckpointMismatch
from .listing import SHOWN, listed

#: ``partial_load``: None or False (every tensor must load), True (any may
#: stay as initialised) or names and patterns of those that may.
PartialLoad = Union[None, bool, Sequence[str]]


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
                     f'{listed(self.unloaded)}')
        if self.unused:
            line += (f'; {len(self.unused)} of the checkpoint unused: '
                     f'{listed(self.unused)}')
        return line


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
        lines.append('  first missing: ' + listed(fit.missing))
    if fit.unused:
        lines.append('  first unused (no place in the model): '
                     + listed(fit.unused))
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
