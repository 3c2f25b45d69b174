"""The video family of the benchmark driver: MMAction2 recognisers built
from configs (stock, dense and each config's), run on random clips.

:class:`VideoFamily` is the adapter :func:`.driver.measure` asks; the
clip-shape checks and the names configs get are shared with the engines
benchmark (:mod:`.engines`) and the deployment tools.
"""
import inspect
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..measure.forward import forward_fn
from ..measure.observe import ReducerTimer, TokenRecorder
from .driver import Naming, Setting
from .variants import stock_backbone_class

#: The models every run has besides the configs' own.
BASELINES = ('stock', 'dense')


def config_names(configs: Union[str, Sequence[str]]) -> Dict[str, str]:
    """The config paths by the name their model gets in the table: 'ours'
    for a single config, else each file's stem."""
    paths = [configs] if isinstance(configs, (str, Path)) else list(configs)
    names: Dict[str, str] = {}
    for path in paths:
        name = 'ours' if len(paths) == 1 else Path(path).stem
        if name in names or name in BASELINES:
            raise ValueError(f'configs compared in one run need distinct '
                             f'file names other than {BASELINES}; '
                             f'{name!r} is taken ({path})')
        names[name] = str(path)
    return names


def built_clip_shape(backbone: Dict) -> Dict[str, int]:
    """``num_frames``, ``img_size``, ``patch_size`` and ``tubelet_size`` of
    a VideoMAE backbone config, stock's defaults where it leaves them out."""
    defaults = inspect.signature(
        stock_backbone_class(backbone['type']).__init__).parameters
    return {name: backbone.get(name, defaults[name].default)
            for name in ('num_frames', 'img_size', 'patch_size',
                         'tubelet_size')}


def default_clip_shape(backbone: Dict) -> List[int]:
    """``(T, H, W)`` of the clips the backbone config was built for."""
    built = built_clip_shape(backbone)
    return [built['num_frames'], built['img_size'], built['img_size']]


def check_clip_shape(backbone: Dict, shape: Sequence[int], config: str,
                     option: str = 'input_shape') -> None:
    """Raise ValueError naming ``option`` unless clips of ``shape``
    ``(T, H, W)`` fit the position embedding the backbone config builds:
    its ``num_frames`` frames exactly (stock MMAction2 fails deep inside its
    forward otherwise), any H and W that are multiples of the patch (the
    embedding is interpolated in space)."""
    built = built_clip_shape(backbone)
    frames, size, patch, tubelet = (built[name] for name in (
        'num_frames', 'img_size', 'patch_size', 'tubelet_size'))
    t, h, w = shape
    problems, ways = [], [f'{option} {frames} {size} {size}']
    if t != frames:
        problems.append(f'its position embedding fits T={frames} frames only')
        ways.append(f'build the model for {t} frames with --cfg-options '
                    f'model.backbone.num_frames={t}' if t > 0 and
                    t % tubelet == 0 else 'build it for T frames with '
                    '--cfg-options model.backbone.num_frames=T (a multiple '
                    f'of tubelet_size={tubelet})')
    if any(v < patch or v % patch for v in (h, w)):
        problems.append(f'H and W must be positive multiples of patch_size='
                        f'{patch} (the embedding is interpolated to them)')
        nearest = f'{option} {frames} ' + ' '.join(
            str(max(patch, round(v / patch) * patch)) for v in (h, w))
        if nearest != ways[0]:
            ways.insert(1, nearest)
    if problems:
        raise ValueError(
            f"{option} {t} {h} {w}: {config}'s model was built for clips of "
            f'{frames} x {size} x {size} (model.backbone.num_frames={frames}'
            f', img_size={size}); {" and ".join(problems)}. Use '
            f'{" or ".join(ways)}')


def reduction_overhead(model: nn.Module, forward: Callable,
                       repeats: int) -> Optional[float]:
    """Median fraction of a forward pass spent in the token reducers (in a
    separate, synchronised pass: timing them slows the measured runs)."""
    backbone = model.backbone
    if not backbone.token_reduction.reducers:
        return None
    fractions = []
    with ReducerTimer(backbone) as timer:
        for _ in range(repeats):
            timer.reset()
            forward()
            fractions.append(timer.fraction)
    return statistics.median(fractions)


def branch_counts(model: nn.Module, forward: Callable) -> Dict[str, int]:
    """Branches the reducers took in one forward pass (e.g. PPT's pool and
    prune decisions per clip and block)."""
    reducers = model.backbone.token_reduction.reducers
    for reducer in reducers:
        reducer.reset_counts()
    forward()
    counts: Dict[str, int] = {}
    for reducer in reducers:
        counts.update(reducer.branch_counts())
    return counts


@dataclass
class VideoFamily:
    """Recognisers on clips ``(B, 1, C, T, H, W)``: each runs as
    ``setting`` says (stock as MMAction2 ships it with ``stock_fp32``);
    ``reduced`` names the configs that set a token reduction; ``probe``
    holds what the memory probe's processes rebuild them from (``paths``
    by name, ``cfg_options``, ``attention_kernel``, ``linear_kernel``)."""
    run_as: Setting
    stock_fp32: bool
    reduced: Sequence[str]
    probe: Dict
    naming: Naming = Naming('clip', 'stock', 'tokens_per_block')
    probe_builder: str = 'mmtokred.benchmark.variants:probe_forward'

    def setting(self, name: str) -> Setting:
        return Setting() if name == 'stock' and self.stock_fp32 else \
            self.run_as

    def forward(self, model: nn.Module, inputs: Tensor,
                setting: Setting) -> Callable[[], Tensor]:
        return forward_fn(model, inputs, setting.amp)

    def tokens(self, name: str, model: nn.Module,
               forward: Callable[[], Tensor]) -> Optional[List[int]]:
        if name == 'stock':  # stock's blocks take no token state
            return None
        with TokenRecorder(model.backbone) as recorder:
            forward()
        return recorder.tokens_per_block

    def extras(self, name: str, model: nn.Module,
               forward: Callable[[], Tensor], repeats: int) -> Dict:
        if name not in self.reduced:
            return {}
        return dict(reduction_overhead=reduction_overhead(model, forward,
                                                          repeats),
                    branch_counts=branch_counts(model, forward))

    def width(self, model: nn.Module) -> int:
        return model.backbone.embed_dims

    def probe_specs(self, folder: Path, inputs: Tensor,
                    models: Dict[str, nn.Module]) -> Dict[str, Dict]:
        """Each model rebuilt from its config by
        :func:`.variants.probe_forward`, the first's weights and the clips
        saved under ``folder``."""
        paths = self.probe['paths']
        first = next(iter(paths))
        torch.save(inputs, folder / 'inputs.pth')
        torch.save(models[first].state_dict(), folder / 'weights.pth')
        specs = {}
        for name in models:
            setting = self.setting(name)
            specs[name] = dict(
                config=paths.get(name, paths[first]),
                cfg_options=self.probe['cfg_options'],
                variant=name if name in BASELINES else 'ours',
                amp=setting.amp, dtype=setting.dtype,
                compile=setting.compile,
                attention_kernel=self.probe['attention_kernel'],
                linear_kernel=self.probe['linear_kernel'],
                weights=str(folder / 'weights.pth'),
                inputs=str(folder / 'inputs.pth'))
        return specs
