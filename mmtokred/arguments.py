"""What the tools' command lines share: argparse types of numeric flags (a
value out of range is refused while parsing, before any clip is read, and
argparse names the flag: ``argument --repeats: 0 is not an integer >=
1``), and ``--partial-load`` of the runner's tools."""
import argparse
import math
from typing import Callable


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def integer(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f'{text} is not an integer >= {low}')
        return value

    return parse


def open_share(note: str = '') -> Callable[[str], float]:
    """A number in (0, 1); ``note`` says why the ends are left out."""

    def parse(text: str) -> float:
        if not 0 < _number(text) < 1:  # NaN too
            raise argparse.ArgumentTypeError(
                f'{text} is not a number in (0, 1){note}')
        return _number(text)

    return parse


def share(text: str) -> float:
    """A number in (0, 1]."""
    if not 0 < _number(text) <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f'{text} is not a number in (0, 1]')
    return _number(text)


#: ``--partial-load [NAME ...]`` of tools/test.py and tools/train.py: the
#: config's ``partial_load`` (:mod:`mmtokred.checkpoint_fit`).
PARTIAL_LOAD_HELP = (
    'load a checkpoint that does not match the model: the names or patterns '
    'of the tensors that may stay as initialised or go unused (e.g. '
    "cls_head), none for any (the config's partial_load; without it every "
    'tensor must load)')


def apply_partial_load(cfg, args: argparse.Namespace) -> None:
    """Set ``cfg.partial_load`` from ``--partial-load`` where given."""
    if args.partial_load is not None:
        cfg.partial_load = args.partial_load or True


def finite(text: str) -> float:
    """A finite number."""
    if not math.isfinite(_number(text)):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number')
    return _number(text)
