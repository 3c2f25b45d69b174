"""The image family of the benchmark driver: timm's image ViTs against
themselves patched by :func:`mmtokred.timm.apply_token_reduction`.

:func:`compare_timm` times a timm model and the same weights patched with
each setting in one run, the models taking turns in every repetition,
through :func:`.driver.measure` (``tools/benchmark_timm.py``, docs/timm.md);
:class:`ImageFamily` is its adapter. Their accuracy:
:mod:`.image_accuracy`.
"""
import argparse
import ast
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import timm
import torch
from timm.data import resolve_model_data_config
from torch import Tensor, nn

from ..measure.forward import DTYPES, check_device, device_name, prepare
from ..measure.observe import tokens_through_blocks
from ..measure.peak import limit_lines
from ..measure.side_by_side import format_ratio, format_spread
from ..table import Column, format_table as table, key
from ..timm.checkpoint import load_checkpoint
from ..timm.patch import PAPER_SETTINGS, apply_token_reduction
from .cells import format_tokens, speedup
from .driver import Naming, Setting, check_counts, measure, random_inputs

#: Benchmarked when no model is named.
DEFAULT_MODELS = ('deit_small_patch16_224', 'vit_base_patch16_384')
#: The paper settings each model is compared with by default.
MODEL_SETTINGS = {
    'deit_small_patch16_224': ('ppt-deit-s', 'nepam-deit-s', 'jmp-deit-s',
                               'patchsim-deit-s'),
    'vit_base_patch16_384': ('nepam-vit-b16-384', ),
}
#: Images per forward pass by default (other models: 8).
DEFAULT_BATCH_SIZES = {'deit_small_patch16_224': 32,
                       'vit_base_patch16_384': 8}
#: The row of the unmodified timm model.
STOCK = 'timm'

TokenReduction = Union[str, Dict]


def parse_token_reduction(text: TokenReduction) -> TokenReduction:
    """A name of :data:`~mmtokred.timm.PAPER_SETTINGS`, or a dict written as
    a Python literal (``"dict(...)"`` is not a literal: use ``{...}``)."""
    if isinstance(text, dict) or text in PAPER_SETTINGS:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise ValueError(
            f'token_reduction must be one of {tuple(PAPER_SETTINGS)} or a '
            "dict literal such as \"{'blocks': {'type': 'ToMe', 'r': 8}}\", "
            f'got {text!r}')
    return value


def token_reduction_arg(text: str) -> TokenReduction:
    """:func:`parse_token_reduction` as an argparse ``type``."""
    try:
        return parse_token_reduction(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def reduction_label(token_reduction: TokenReduction) -> str:
    """A short row name: the setting's name, or the reducers' types."""
    if isinstance(token_reduction, str):
        return token_reduction
    types = [token_reduction[stage].get('type', '?')
             for stage in ('input', 'blocks')
             if isinstance(token_reduction.get(stage), dict)]
    return '+'.join(types) or 'no reducer'


def create_model(name: str, pretrained: bool = False,
                 checkpoint: Optional[str] = None) -> nn.Module:
    """A timm model for inference (eval mode, no gradients): random weights
    (seed 0), timm's pretrained ones (downloaded) or ``checkpoint``'s."""
    if pretrained and checkpoint:
        raise ValueError('pretrained and checkpoint exclude each other')
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=pretrained)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval().requires_grad_(False)


def reduced_copy(model: nn.Module,
                 token_reduction: TokenReduction) -> nn.Module:
    """``model`` (left as it is) patched with ``token_reduction``, on the
    same weights."""
    return apply_token_reduction(copy.deepcopy(model), token_reduction).eval()


def image_forward_fn(model: nn.Module,
                     images: Tensor) -> Callable[[], Tensor]:
    """The measured work of a timm classifier: its forward pass on
    ``images`` ``(B, C, H, W)`` (cast to the model's dtype), synchronised
    on GPU (the image counterpart of
    :func:`mmtokred.measure.forward.forward_fn`)."""
    images = images.to(next(model.parameters()).dtype)

    def forward() -> Tensor:
        with torch.inference_mode():
            out = model(images)
        if images.device.type == 'cuda':
            torch.cuda.synchronize(images.device)
        return out

    return forward


def probe_forward(spec: Dict) -> Callable[[], Tensor]:
    """The measured forward of one row, rebuilt in the fresh process of
    :class:`mmtokred.measure.memory.MemoryProbe`: ``spec`` holds ``model``,
    ``token_reduction``, ``dtype`` and the files ``weights`` and
    ``inputs``."""
    model = timm.create_model(spec['model'], pretrained=False)
    model.eval().requires_grad_(False)
    model.load_state_dict(torch.load(spec['weights'], weights_only=True))
    if spec['token_reduction'] is not None:
        apply_token_reduction(model, spec['token_reduction'])
    prepare(model, spec['dtype'])
    return image_forward_fn(
        model, torch.load(spec['inputs'], weights_only=True))


@dataclass
class ImageFamily:
    """timm classifiers on images ``(B, C, H, W)``, all in ``dtype``:
    ``model_name`` and each row's ``settings`` (None for timm's own), for
    the memory probe to rebuild them."""
    model_name: str
    settings: Dict[str, Optional[TokenReduction]]
    dtype: str
    naming: Naming = Naming('image', STOCK, 'tokens', 'seconds_per_repeat')
    probe_builder: str = 'mmtokred.benchmark.image:probe_forward'

    def setting(self, name: str) -> Setting:
        return Setting(self.dtype)

    def forward(self, model: nn.Module, inputs: Tensor,
                setting: Setting) -> Callable[[], Tensor]:
        return image_forward_fn(model, inputs)

    def tokens(self, name: str, model: nn.Module,
               forward: Callable[[], Tensor]) -> List[int]:
        return tokens_through_blocks(model.blocks, forward)

    def extras(self, name: str, model: nn.Module,
               forward: Callable[[], Tensor], repeats: int) -> Dict:
        return dict(token_reduction=self.settings[name])

    def width(self, model: nn.Module) -> int:
        return model.embed_dim

    def probe_specs(self, folder: Path, inputs: Tensor,
                    models: Dict[str, nn.Module]) -> Dict[str, Dict]:
        """Each row rebuilt by :func:`probe_forward` from timm's weights
        and the images, saved under ``folder``."""
        weights, images = folder / 'weights.pth', folder / 'in.pth'
        torch.save({name: value.float().cpu() for name, value in
                    models[STOCK].state_dict().items()}, weights)
        torch.save(inputs, images)
        return {label: dict(model=self.model_name, token_reduction=setting,
                            dtype=self.dtype, weights=str(weights),
                            inputs=str(images))
                for label, setting in self.settings.items()}


def row_settings(token_reductions: Sequence[TokenReduction]
                 ) -> Dict[str, Optional[TokenReduction]]:
    """Each row's token reduction by its label (None for timm's own); a
    label given twice numbered ``#2``, ``#3``."""
    settings: Dict[str, Optional[TokenReduction]] = {STOCK: None}
    for token_reduction in token_reductions:
        token_reduction = parse_token_reduction(token_reduction)
        label = base = reduction_label(token_reduction)
        index = 2
        while label in settings:
            label, index = f'{base}#{index}', index + 1
        settings[label] = token_reduction
    return settings


def compare_timm(model_name: str,
                 token_reductions: Sequence[TokenReduction], *,
                 device: str = 'cpu',
                 batch_size: int = 8,
                 warmup: int = 1,
                 repeats: int = 5,
                 dtype: str = 'fp32',
                 pretrained: bool = False,
                 checkpoint: Optional[str] = None) -> Dict:
    """Benchmark timm's ``model_name`` against itself patched with each of
    ``token_reductions`` (names of
    :data:`~mmtokred.timm.PAPER_SETTINGS` or dicts), all on the same
    weights and the same random images of the model's input size.

    Every repetition runs each model once in turn (a noisy neighbour slows
    them alike); the figures are medians. GFLOPs count multiply-accumulates
    per image, as ``tools/benchmark.py`` does.

    Returns:
        A dict with the run's settings and ``rows``: per row (``timm``
        first, then one per reduction) ``gflops_per_image``,
        ``flops_ratio_vs_timm``, ``images_per_s``, ``seconds_per_batch``
        (median), ``seconds_per_repeat``, ``spread`` ((max - min) / median
        of the repeats), ``speedup_vs_timm`` (ratio of medians) with
        ``speedup_range`` (the lowest and highest of the repetitions'
        paired ratios), ``gflops_per_s``, ``activation_mib``,
        ``total_mib``, ``peak_mem_ratio_vs_timm`` (activation peaks),
        ``tokens`` (entering the first block, then leaving each) and
        ``token_reduction``.
    """
    check_counts(batch_size, warmup, repeats)
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got '
                         f'{dtype!r}')
    dev = check_device(device)
    family = ImageFamily(model_name, row_settings(token_reductions), dtype)
    stock = create_model(model_name, pretrained, checkpoint)
    models = {label: stock if setting is None else
              reduced_copy(stock, setting)
              for label, setting in family.settings.items()}
    images = random_inputs(
        batch_size, resolve_model_data_config(stock)['input_size'])
    found = measure(family, models, images, device=dev, warmup=warmup,
                    repeats=repeats)
    return dict(
        model=model_name,
        weights=('pretrained' if pretrained else checkpoint or
                 'random (seed 0)'),
        device=device_name(dev),
        input_shape=list(images.shape),
        dtype=dtype,
        warmup=warmup,
        repeats=repeats,
        rows=found.figures,
        limits=found.limits,
    )


#: The columns of :func:`format_table`, one row per model.
COLUMNS = (
    Column('row', lambda row: row['label'], 'left', width=18),
    Column('GMACs', key('gflops_per_image', '.2f')),
    Column('FLOPs', key('flops_ratio_vs_timm', '.3f')),
    Column('img/s', key('images_per_s', '.2f')),
    Column('speedup', speedup('speedup_vs_timm')),
    Column('(range)', lambda row: '({:.2f}-{:.2f})'.format(
        *row['speedup_range'])),
    Column('spread', lambda row: format_spread(row['spread'])),
    Column('peak MiB', key('activation_mib', '.1f')),
    Column('memory', lambda row: format_ratio(
        row['peak_mem_ratio_vs_timm'])),
    Column('tokens', lambda row: format_tokens(row['tokens']), 'left'),
)


def format_table(result: Dict) -> str:
    """The figures of :func:`compare_timm` as a plain-text table."""
    title = (f"{result['model']} ({result['weights']} weights) on "
             f"{result['device']}, input {tuple(result['input_shape'])}, "
             f"dtype={result['dtype']}, {result['repeats']} repeats after "
             f"{result['warmup']} warm-up, models taking turns")
    notes = [
        'GMACs: multiply-accumulates per image (as tools/benchmark.py); '
        'FLOPs, speedup, memory: vs timm; range: lowest and highest paired '
        'speedup of a repetition; spread: (max - min) / median of the '
        "repeats' times; peak MiB: the forward pass's own peak",
        limit_lines(result['limits'], {result['dtype']: max(
            row['gflops_per_s'] for row in result['rows'].values())}, 'row')]
    rows = [dict(row, label=label) for label, row in result['rows'].items()]
    return table(COLUMNS, rows, title=title, notes=notes)
