"""The reducers by name: what ``type`` in a ``token_reduction`` stage
names, for every backbone. The one registry of reducers: a new reducer is
decorated with :func:`register`."""
from typing import Callable, Dict, Type

from torch import nn

REDUCERS: Dict[str, Type[nn.Module]] = {}


def register(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Class decorator: make ``cls`` buildable as ``dict(type=cls.__name__,
    ...)``."""
    if cls.__name__ in REDUCERS:
        raise KeyError(f'a reducer named {cls.__name__} is registered '
                       'already')
    REDUCERS[cls.__name__] = cls
    return cls


def build_reducer(cfg: Dict) -> nn.Module:
    """The reducer a config dict names (``type`` and its arguments)."""
    if not isinstance(cfg, dict) or cfg.get('type') not in REDUCERS:
        raise ValueError('a token_reduction stage must be a dict with type '
                         f'one of {tuple(REDUCERS)}, got {cfg!r}')
    options = {k: v for k, v in cfg.items() if k != 'type'}
    return REDUCERS[cfg['type']](**options)


Builder = Callable[[Dict], nn.Module]
