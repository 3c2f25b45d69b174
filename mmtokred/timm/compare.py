"""timm's image ViTs measured side by side with their token-reduced selves.

:func:`compare_timm` times a timm model and the same weights patched by
:func:`mmtokred.timm.apply_token_reduction` in one run, the models taking
turns in every repetition, through the side-by-side routine every benchmark
of mmtokred shares (:mod:`mmtokred.measure.side_by_side`).
:func:`evaluate_timm` gives their top-1 and top-5 on an ImageFolder tree
through timm's own data pipeline. The tools are
``tools/benchmark_timm.py`` and ``tools/eval_timm.py`` (docs/timm.md).
"""
import argparse
import ast
import copy
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import timm
import torch
from timm.data import create_dataset, create_transform, \
    resolve_model_data_config
from torch import Tensor, nn

from ..measure.flops import count_gflops
from ..measure.forward import DTYPES, check_device, device_name, prepare
from ..measure.memory import MemoryProbe, allocated_bytes
from ..measure.observe import tokens_through_blocks
from ..measure.peak import limit_lines, machine_limits
from ..measure.side_by_side import (format_ratio, format_spread,
                                    side_by_side)
from .checkpoint import load_checkpoint
from .patch import PAPER_SETTINGS, apply_token_reduction

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


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# Speed, FLOPs, memory
# --------------------------------------------------------------------------
def compare_timm(model_name: str,
                 token_reductions: Sequence[TokenReduction],
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
    for name, value, low in (('batch_size', batch_size, 1),
                             ('warmup', warmup, 0), ('repeats', repeats, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got '
                         f'{dtype!r}')
    dev = check_device(device)
    settings = {STOCK: None}
    for token_reduction in token_reductions:
        token_reduction = parse_token_reduction(token_reduction)
        label = base = reduction_label(token_reduction)
        index = 2
        while label in settings:
            label, index = f'{base}#{index}', index + 1
        settings[label] = token_reduction
    stock = create_model(model_name, pretrained, checkpoint)
    models = {label: stock if setting is None else
              reduced_copy(stock, setting)
              for label, setting in settings.items()}
    input_size = resolve_model_data_config(stock)['input_size']
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, *input_size, generator=generator)

    forwards, rows, resident = {}, {}, {}
    device_images = images.to(dev)
    for label, model in models.items():
        held = allocated_bytes(dev)
        prepare(model.to(dev), dtype)
        forwards[label] = image_forward_fn(model, device_images)
        resident[label] = allocated_bytes(dev) - held
        one_image = image_forward_fn(model, device_images[:1])
        rows[label] = dict(
            token_reduction=settings[label],
            gflops_per_image=count_gflops(one_image),
            tokens=tokens_through_blocks(model.blocks, one_image))

    def specs(folder: Path) -> Dict[str, Dict]:
        weights, inputs = folder / 'weights.pth', folder / 'in.pth'
        torch.save({key: value.float().cpu() for key, value in
                    stock.state_dict().items()}, weights)
        torch.save(images, inputs)
        return {label: dict(model=model_name, token_reduction=setting,
                            dtype=dtype, weights=str(weights),
                            inputs=str(inputs))
                for label, setting in settings.items()}

    run = side_by_side(forwards, warmup, repeats, dev, MemoryProbe(
        'mmtokred.timm.compare:probe_forward', specs, resident))
    base = rows[STOCK]
    for label, row in rows.items():
        row.update(run.figures(label))
        seconds = row.pop('seconds_per_turn')
        row.update(
            seconds_per_repeat=seconds,
            images_per_s=batch_size / row['seconds_per_batch'],
            # two FLOPs per multiply-accumulate, as peaks count
            gflops_per_s=2 * row['gflops_per_image'] * batch_size /
            row['seconds_per_batch'],
            flops_ratio_vs_timm=row['gflops_per_image'] /
            base['gflops_per_image'],
            speedup_vs_timm=run.speedup(label, STOCK),
            speedup_range=list(run.speedup_range(label, STOCK)),
            peak_mem_ratio_vs_timm=run.memory_ratio(label, STOCK))
    return dict(
        model=model_name,
        weights=('pretrained' if pretrained else checkpoint or
                 'random (seed 0)'),
        device=device_name(dev),
        input_shape=list(images.shape),
        dtype=dtype,
        warmup=warmup,
        repeats=repeats,
        rows=rows,
        limits=machine_limits(
            {dtype: DTYPES[dtype]}, dev,
            batch_size * base['tokens'][0], stock.embed_dim),
    )


def format_table(result: Dict) -> str:
    """The figures of :func:`compare_timm` as a plain-text table."""
    header = (f"{'row':<18} {'GMACs':>6} {'FLOPs':>6} {'img/s':>8} "
              f"{'speedup':>8} {'(range)':>13} {'spread':>7} "
              f"{'peak MiB':>9} {'memory':>7}  tokens")
    lines = [
        f"{result['model']} ({result['weights']} weights) on "
        f"{result['device']}, input {tuple(result['input_shape'])}, "
        f"dtype={result['dtype']}, {result['repeats']} repeats after "
        f"{result['warmup']} warm-up, models taking turns",
        header,
        '-' * len(header),
    ]
    for label, row in result['rows'].items():
        low, high = row['speedup_range']
        tokens = row['tokens']
        tokens = (f'{tokens[0]}' if len(set(tokens)) == 1 else
                  f'{tokens[0]}->{tokens[-1]}')
        lines.append(
            f"{label:<18} {row['gflops_per_image']:>6.2f} "
            f"{row['flops_ratio_vs_timm']:>6.3f} "
            f"{row['images_per_s']:>8.2f} "
            f"{row['speedup_vs_timm']:>7.2f}x "
            f"{f'({low:.2f}-{high:.2f})':>13} "
            f"{format_spread(row['spread']):>7} "
            f"{row['activation_mib']:>9.1f} "
            f"{format_ratio(row['peak_mem_ratio_vs_timm']):>7}  {tokens}")
    lines.append(
        'GMACs: multiply-accumulates per image (as tools/benchmark.py); '
        'FLOPs, speedup, memory: vs timm; range: lowest and highest paired '
        'speedup of a repetition; spread: (max - min) / median of the '
        "repeats' times; peak MiB: the forward pass's own peak")
    lines.append(limit_lines(result['limits'], {result['dtype']: max(
        row['gflops_per_s'] for row in result['rows'].values())}, 'row'))
    return '\n'.join(lines)


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------
def _evenly_spaced(total: int, limit: Optional[int]) -> List[int]:
    """``limit`` indices spread over ``range(total)`` (every class of a
    folder sorted by class), or all."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise ValueError(f'limit must be >= 1, got {limit}')
    return sorted({math.floor(i * total / limit) for i in range(limit)})


def evaluate_timm(model_name: str,
                  data_dir: str,
                  token_reduction: TokenReduction,
                  checkpoint: Optional[str] = None,
                  pretrained: bool = False,
                  batch_size: int = 64,
                  limit: Optional[int] = None,
                  workers: int = 2,
                  device: str = 'cpu',
                  crop_pct: Optional[float] = None,
                  class_map: str = '') -> Dict:
    """Top-1 and top-5 of timm's ``model_name`` with and without
    ``token_reduction`` on the ImageFolder tree ``data_dir`` (one folder per
    class; a ``val`` or ``validation`` folder inside it is used if there is
    one), read by timm's dataset with timm's eval transform for the model
    (``resolve_model_data_config``; ``crop_pct`` overrides the model's).

    Both models see every batch; ``agreement`` is the share of images with
    the same top-1 prediction. ``limit`` takes that many images spread
    evenly over the data set. Class indices are timm's: class folders in
    sorted (natural) order, or ``class_map``.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    token_reduction = parse_token_reduction(token_reduction)
    dev = torch.device(device)
    stock = create_model(model_name, pretrained, checkpoint)
    reduced = reduced_copy(stock, token_reduction)
    overrides = {} if crop_pct is None else {'crop_pct': crop_pct}
    data_config = resolve_model_data_config(stock, args=overrides)
    dataset = create_dataset('', root=data_dir, split='validation',
                             is_training=False, class_map=class_map,
                             transform=create_transform(**data_config,
                                                        is_training=False))
    indices = _evenly_spaced(len(dataset), limit)
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, shuffle=False, num_workers=workers,
        pin_memory=dev.type == 'cuda')
    num_classes = stock.num_classes
    k = min(5, num_classes)
    models = {STOCK: stock.to(dev), 'reduced': reduced.to(dev)}
    correct = {name: [0, 0] for name in models}  # top-1, top-k
    agree = seen = 0
    with torch.inference_mode():
        for images, targets in loader:
            images, targets = images.to(dev), targets.to(dev)
            if int(targets.max()) >= num_classes:
                raise ValueError(
                    f'{data_dir} has class index {int(targets.max())} but '
                    f'{model_name} has {num_classes} classes')
            top1 = {}
            for name, model in models.items():
                topk = model(images).topk(k, dim=1).indices
                hits = topk == targets[:, None]
                correct[name][0] += int(hits[:, 0].sum())
                correct[name][1] += int(hits.any(1).sum())
                top1[name] = topk[:, 0]
            agree += int((top1[STOCK] == top1['reduced']).sum())
            seen += len(targets)
    if seen == 0:
        raise ValueError(f'no images found under {data_dir}')

    one_image = torch.zeros(1, *data_config['input_size'], device=dev)
    figures = {
        name: dict(top1=100 * correct[name][0] / seen,
                   top5=100 * correct[name][1] / seen,
                   gflops_per_image=count_gflops(
                       image_forward_fn(model, one_image)))
        for name, model in models.items()
    }
    return dict(
        model=model_name,
        weights=('pretrained' if pretrained else checkpoint or
                 'random (seed 0)'),
        data_dir=str(data_dir),
        images=seen,
        classes=len(set(dataset.reader.class_to_idx)) if hasattr(
            dataset.reader, 'class_to_idx') else None,
        topk=k,
        data_config={key: list(value) if isinstance(value, tuple) else value
                     for key, value in data_config.items()},
        token_reduction=token_reduction,
        device=device_name(dev),
        **figures,
        top1_diff=figures['reduced']['top1'] - figures[STOCK]['top1'],
        top5_diff=figures['reduced']['top5'] - figures[STOCK]['top5'],
        agreement=100 * agree / seen,
    )


def format_evaluation(result: Dict) -> str:
    """The figures of :func:`evaluate_timm` as plain text."""
    k = result['topk']
    stock, reduced = result[STOCK], result['reduced']
    tr = result['token_reduction']
    tr = tr if isinstance(tr, str) else json.dumps(tr)
    flops = reduced['gflops_per_image'] / stock['gflops_per_image']
    return '\n'.join([
        f"{result['model']} ({result['weights']} weights) on "
        f"{result['images']} images of {result['data_dir']}, "
        f"{result['device']}; token_reduction {tr}",
        f"timm:     top-1 {stock['top1']:6.2f}  top-{k} {stock['top5']:6.2f}"
        f"  GMACs {stock['gflops_per_image']:.2f}",
        f"reduced:  top-1 {reduced['top1']:6.2f}  top-{k} "
        f"{reduced['top5']:6.2f}  GMACs {reduced['gflops_per_image']:.2f} "
        f"({flops:.3f} of timm)",
        f"difference (reduced - timm): top-1 {result['top1_diff']:+.2f}  "
        f"top-{k} {result['top5_diff']:+.2f}",
        f"agreement of top-1 predictions: {result['agreement']:.2f}%",
    ])
