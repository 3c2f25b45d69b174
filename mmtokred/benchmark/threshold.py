"""NEPAM's threshold mode: a padded batch against one clip at a time.

In threshold mode clips keep different numbers of tokens. Batched, they are
padded to the longest clip and the padding is masked out of attention (and
pooling); the alternative runs each clip on its own, wasting no compute on
padding but giving up batching.
"""
from typing import Dict, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.config import Config

from ..measure.observe import TokenRecorder
from ..measure.side_by_side import side_by_side


def clips_of_varied_redundancy(batch_size: int, shape: Sequence[int],
                               seed: int = 0) -> torch.Tensor:
    """Noise clips whose top ``i / batch_size`` is flat and static (clip i),
    so that a threshold merges a different share of each clip."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch_size, 3, *shape, generator=generator)
    height = shape[1]
    for i in range(batch_size):
        clips[i, :, :, :height * i // batch_size] = 0.5
    return clips


def compare_padding(config: str,
                    threshold: float,
                    batch_size: int = 4,
                    repeats: int = 3) -> Dict:
    """Time the config's backbone, its NEPAM set to ``threshold``, on a
    padded batch and clip by clip, side by side
    (:func:`~mmtokred.measure.side_by_side.side_by_side`): medians, spreads
    (``(max - min) / median``) and the padded batch's speedup."""
    cfg = Config.fromfile(config)
    backbone_cfg = cfg.model.backbone
    reduction = dict(backbone_cfg.get('token_reduction') or {})
    nepam = dict(reduction.get('input') or dict(type='NEPAM'))
    if nepam.get('type') != 'NEPAM':
        raise ValueError(f'{config} has no NEPAM input stage to threshold')
    for budget in ('ratio', 'num_windows'):
        nepam.pop(budget, None)
    nepam['threshold'] = threshold
    reduction['input'] = nepam
    backbone = MODELS.build(dict(backbone_cfg,
                                 token_reduction=reduction)).eval()
    shape = (backbone.num_frames, backbone_cfg.get('img_size', 224),
             backbone_cfg.get('img_size', 224))
    clips = clips_of_varied_redundancy(batch_size, shape)

    tokens = []
    with torch.inference_mode():
        with TokenRecorder(backbone) as recorder:
            for clip in clips:
                backbone(clip[None])
                tokens.append(recorder.tokens_per_block[0])
            batched_out = backbone(clips)
            padded_length = recorder.tokens_per_block[0]
        single_out = torch.cat([backbone(clip[None]) for clip in clips])

        # The passes above were the warm-up.
        run = side_by_side({'padded_batch': lambda: backbone(clips),
                            'clip_by_clip': lambda: [backbone(clip[None])
                                                     for clip in clips]},
                           warmup=0, repeats=repeats)
    return dict(
        config=str(config),
        threshold=threshold,
        tokens_per_clip=tokens,
        padded_length=padded_length,
        seconds_padded_batch=run.median('padded_batch'),
        seconds_clip_by_clip=run.median('clip_by_clip'),
        spread_padded_batch=run.spread('padded_batch'),
        spread_clip_by_clip=run.spread('clip_by_clip'),
        padded_speedup=run.speedup('padded_batch', 'clip_by_clip'),
        max_abs_diff=float((batched_out - single_out).abs().max()),
    )
