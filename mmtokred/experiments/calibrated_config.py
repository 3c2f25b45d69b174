"""The config a calibration writes: its base with the chosen
``token_reduction``."""
import os.path as osp
from typing import Dict, Optional, Sequence


def calibrated_config(base: str, reduction: Optional[Dict],
                      base_has_reduction: bool, notes: Sequence[str]) -> str:
    """The text of a config that inherits ``base`` (by its absolute path:
    the written file can be moved) and changes only
    ``model.backbone.token_reduction`` (replaced whole: ``_delete_`` where
    the base sets one)."""
    if reduction is None:
        value = 'None'
    else:
        reduction = dict(reduction)
        if base_has_reduction:
            reduction = dict(_delete_=True, **reduction)
        value = _python(reduction, 12)
    lines = [f'# {note}' for note in notes]
    lines += [f'_base_ = {osp.abspath(base)!r}', '',
              'model = dict(', '    backbone=dict(',
              f'        token_reduction={value}))', '']
    return '\n'.join(lines)


def _python(value, indent: int) -> str:
    """``value`` as Python source, dicts written ``dict(...)``."""
    if isinstance(value, dict):
        pad = ' ' * indent
        items = [f'{pad}{k}={_python(v, indent + 4)}'
                 for k, v in value.items()]
        return 'dict(\n' + ',\n'.join(items) + ')'
    if isinstance(value, (list, tuple)):
        return '(' + ', '.join(_python(v, indent) for v in value) + (
            ',)' if len(value) == 1 else ')')
    return repr(value)
