"""What a checkpoint seems to be of: the ViT shape its tensors show, and
the shipped configs of that shape."""
import functools
import re
from pathlib import Path
from typing import Dict, List, Mapping

from torch import Tensor

from .listing import listed


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
CONFIGS = Path(__file__).resolve().parents[2] / 'configs'


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
                f'{listed(list(state_dict), 3) or "none"})')
    words = ', '.join(f'{key} {value}' for key, value in shape.items())
    configs = matching_configs(shape)
    if configs:
        return f'a ViT with {words}, as in {listed(configs, 3)}'
    return f'a ViT with {words} (no shipped config has that shape)'
