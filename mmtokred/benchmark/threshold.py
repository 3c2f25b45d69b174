"""NEPAM's threshold mode: a padded batch against one clip at a time.

In threshold mode clips keep different numbers of tokens. Batched, they are
padded to the longest clip and the padding is masked out of attention (and
pooling); the alternative runs each clip on its own, wasting no compute on
padding but giving up batching.
"""
import statistics
import time
from typing import Dict, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.config import Config

from .observe import TokenRecorder


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
    padded batch and clip by clip, taking turns in every repetition."""
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

        def batched():
            backbone(clips)

        def one_by_one():
            for clip in clips:
                backbone(clip[None])

        times = {'padded_batch': [], 'clip_by_clip': []}
        for _ in range(repeats):
            for name, run in (('padded_batch', batched),
                              ('clip_by_clip', one_by_one)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(ts) for name, ts in times.items()}
    return dict(
        config=str(config),
        threshold=threshold,
        tokens_per_clip=tokens,
        padded_length=padded_length,
        seconds_padded_batch=seconds['padded_batch'],
        seconds_clip_by_clip=seconds['clip_by_clip'],
        padded_speedup=seconds['clip_by_clip'] / seconds['padded_batch'],
        max_abs_diff=float((batched_out - single_out).abs().max()),
    )
