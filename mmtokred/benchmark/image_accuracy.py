"""Top-1 and top-5 of timm's image ViTs with and without a token
reduction, on an ImageFolder tree through timm's own data pipeline
(``tools/eval_timm.py``, docs/timm.md)."""
import json
import math
from typing import Dict, List, Optional

import torch
from timm.data import create_dataset, create_transform, \
    resolve_model_data_config

from ..measure.flops import count_gflops
from ..measure.forward import device_name
from ..table import Column, format_table, key
from .image import (STOCK, TokenReduction, create_model, image_forward_fn,
                    parse_token_reduction, reduced_copy)


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
                  token_reduction: TokenReduction, *,
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
    """The figures of :func:`evaluate_timm` as a plain-text table."""
    k = result['topk']
    tr = result['token_reduction']
    tr = tr if isinstance(tr, str) else json.dumps(tr)
    stock = result[STOCK]['gflops_per_image']
    columns = (
        Column('model', lambda row: row['name'], 'left'),
        Column('top-1', key('top1', '.2f')),
        Column(f'top-{k}', key('top5', '.2f')),
        Column('GMACs', key('gflops_per_image', '.2f')),
        Column('of timm', key('gflops_per_image', '.3f', scale=1 / stock)),
    )
    rows = [dict(result[name], name=name) for name in (STOCK, 'reduced')]
    return format_table(columns, rows, title=(
        f"{result['model']} ({result['weights']} weights) on "
        f"{result['images']} images of {result['data_dir']}, "
        f"{result['device']}; token_reduction {tr}"), notes=[
        f"difference (reduced - timm): top-1 {result['top1_diff']:+.2f}  "
        f"top-{k} {result['top5_diff']:+.2f}",
        f"agreement of top-1 predictions: {result['agreement']:.2f}%"])
