"""NEPAM's threshold mode batched three ways, beside dense, side by side.

In threshold mode each clip keeps the tokens its content needs. A batch of
such clips runs packed (one sequence, attention per clip: the default), or
padded to the longest clip (padding masked out of attention and pooling),
or one clip at a time. The clips are :func:`clips_of_graded_redundancy`
(each its own share of merging windows), and the threshold is set so that
the batch keeps a chosen mean share of the tokens.
"""
import math
from typing import Dict, Optional, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.config import Config

from ..experiments.threshold_budget import least_threshold
from ..measure.flops import count_gflops
from ..measure.forward import (DTYPES, autocast_dtype, check_device,
                               device_name)
from ..measure.kernels import choose_packed_kernel, packed_kernel_ms
from ..measure.observe import TokenRecorder
from ..measure.side_by_side import format_spread, side_by_side
from ..ops import tubelet_pixels, window_layout, window_scores
from ..ops.packed_attention import packed_kernel_reason
from ..table import Column, format_table, key
from .cells import speedup
from .driver import check_precision

#: The names of the dtypes the models compute in.
PRECISIONS = {torch_dtype: name for name, torch_dtype in DTYPES.items()}
#: The ways a threshold batch runs, in the table's order.
WAYS = ('dense', 'packed', 'padded', 'clip_by_clip')


def clips_of_graded_redundancy(batch_size: int, shape: Sequence[int],
                               seed: int = 0) -> torch.Tensor:
    """``(B, 3, T, H, W)`` noise clips whose amplitude grows down the rows
    of each frame, clip ``i`` steeper than clip ``i - 1`` (slopes spread
    over a factor of 16): under a threshold on the window scores, which
    grow with the amplitude, each clip merges its own share of windows,
    the first clips most."""
    generator = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch_size, 3, *shape, generator=generator)
    rows = torch.linspace(0, 1, shape[1])
    slopes = 2. ** torch.linspace(-2, 2, batch_size)
    return clips * (slopes[:, None] * rows)[:, None, None, :, None]


def threshold_for_tokens(clips: torch.Tensor, nepam: Dict, tubelet:
                         Sequence[int], share: float) -> float:
    """The least NEPAM threshold under which ``clips`` keep at most
    ``share`` of their tokens on average."""
    pixels = tubelet_pixels(clips, tubelet)
    grid = pixels.shape[1:4]
    window = tuple(nepam.get('window', (1, 2, 2)))
    members, _ = window_layout(grid, window)
    scores = window_scores(pixels.flatten(1, 3), members,
                           nepam.get('distance', 'l1'))
    tokens = math.prod(grid)
    merged = torch.arange(members.shape[0] + 1)
    kept = (tokens - merged * (members.shape[1] - 1)) / tokens
    return least_threshold(scores, kept, share, f'NEPAM {window} windows',
                           'share of the tokens')


def compare_batching(config: str, *,
                     mean_tokens: Optional[float] = 0.5,
                     threshold: Optional[float] = None,
                     batch_size: int = 16,
                     repeats: int = 3,
                     cfg_options: Optional[Dict] = None,
                     device: str = 'cpu',
                     dtype: str = 'fp32',
                     amp: bool = False) -> Dict:
    """Time the config's backbone dense and, its NEPAM in threshold mode,
    packed, padded and clip by clip, taking turns
    (:func:`~mmtokred.measure.side_by_side.side_by_side`).

    Args:
        config: a config with a NEPAM input stage (its budget is replaced by
            the threshold).
        mean_tokens: the share of the tokens the batch keeps on average,
            which sets the threshold; or
        threshold: NEPAM's threshold as given.
        device: where the models run ('cpu', 'cuda', 'cuda:1').
        dtype: what the weights and clips are cast to ('fp32', 'bf16',
            'fp16'); or
        amp: fp32 weights under autocast (fp16 on GPU, bf16 on CPU).

    Returns:
        Per way: ``seconds``, ``spread`` (``(max - min) / median`` of the
        turns), ``clips_per_s``, ``gmacs_per_clip`` (counted, the batch's
        mean); the speedups of packed over dense, padded and clip by clip;
        the tokens each clip kept; the largest difference of packed and of
        padded from clip by clip; the ms of one call of each packed
        attention kernel at the batch's lengths (None: does not run here).
        On a GPU that measurement comes first and 'auto' runs the fastest
        (:func:`~mmtokred.measure.kernels.choose_packed_kernel`).
    """
    if (mean_tokens is None) == (threshold is None):
        raise ValueError('give exactly one of mean_tokens and threshold')
    if mean_tokens is not None and not 0 < mean_tokens <= 1:
        raise ValueError(f'mean_tokens must be in (0, 1], got {mean_tokens}')
    dev = check_device(device)
    check_precision(dtype, amp)
    compute = autocast_dtype(dev.type) if amp else DTYPES[dtype]
    if batch_size < 2:
        raise ValueError(f'batch_size must be >= 2 to batch clips of '
                         f'different lengths, got {batch_size}')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    backbone_cfg = cfg.model.backbone
    reduction = dict(backbone_cfg.get('token_reduction') or {})
    nepam = dict(reduction.get('input') or {})
    if nepam.get('type') != 'NEPAM':
        raise ValueError(f'{config} has no NEPAM input stage to threshold')
    for budget in ('ratio', 'num_windows'):
        nepam.pop(budget, None)
    size = backbone_cfg.get('img_size', 224)
    shape = (backbone_cfg.get('num_frames', 16), size, size)
    clips = clips_of_graded_redundancy(batch_size, shape)
    if threshold is None:
        patch = backbone_cfg.get('patch_size', 16)
        threshold = threshold_for_tokens(
            clips, nepam, (backbone_cfg.get('tubelet_size', 2), patch, patch),
            mean_tokens)
    nepam['threshold'] = threshold
    clips = clips.to(dev, DTYPES[dtype])

    def build(token_reduction):
        torch.manual_seed(0)  # the same weights for every way
        return MODELS.build(dict(
            backbone_cfg, token_reduction=token_reduction)).eval().to(
                dev, DTYPES[dtype])

    def autocast(forward):
        def run():
            with torch.autocast(dev.type, dtype=compute, enabled=amp):
                return forward()
        return run

    dense = build(None)
    packed = build(dict(reduction, input=nepam, packed=True))
    padded = build(dict(reduction, input=nepam, packed=False))
    forwards = {
        'dense': autocast(lambda: dense(clips)),
        'packed': autocast(lambda: packed(clips)),
        'padded': autocast(lambda: padded(clips)),
        'clip_by_clip': autocast(
            lambda: [packed(clip[None]) for clip in clips]),
    }
    with torch.inference_mode(), TokenRecorder(packed) as recorder:
        forwards['packed']()
    tokens = list(recorder.clip_tokens_per_block[0])
    attn = packed.blocks[0].attn
    kernel_shape = (tokens, attn.num_heads,
                    packed.embed_dims // attn.num_heads, dev)
    kernel_options = dict(
        repeats=repeats, dtype=compute,
        key_bias=packed.token_reduction.proportional_attention)
    if dev.type == 'cpu':  # its rule is measured (docs/packed.md)
        kernels_ms = packed_kernel_ms(*kernel_shape, **kernel_options)
    else:  # as AttentionKernelHook: 'auto' runs the fastest here
        _, kernels_ms = choose_packed_kernel(*kernel_shape, **kernel_options)
    with torch.inference_mode():
        packed_out = forwards['packed']()
        single_out = torch.cat(forwards['clip_by_clip']())
        padded_out = forwards['padded']()
        gmacs = {way: count_gflops(forward) / batch_size
                 for way, forward in forwards.items()}
        run = side_by_side(forwards, warmup=1, repeats=repeats, device=dev)
    full = math.prod((shape[0] // backbone_cfg.get('tubelet_size', 2),
                      size // backbone_cfg.get('patch_size', 16),
                      size // backbone_cfg.get('patch_size', 16)))
    ways = {way: dict(seconds=run.median(way), spread=run.spread(way),
                      clips_per_s=batch_size / run.median(way),
                      gmacs_per_clip=gmacs[way]) for way in WAYS}
    return dict(
        config=str(config),
        device=device_name(dev),
        dtype=dtype,
        amp=amp,
        precision=f'amp ({PRECISIONS[compute]})' if amp else dtype,
        batch_size=batch_size,
        threshold=threshold,
        tokens_per_clip=tokens,
        mean_token_share=sum(tokens) / len(tokens) / full,
        padded_length=max(tokens),
        ways=ways,
        packed_vs_dense=run.speedup('packed', 'dense'),
        packed_vs_padded=run.speedup('packed', 'padded'),
        packed_vs_clip_by_clip=run.speedup('packed', 'clip_by_clip'),
        packed_kernel=packed_kernel_reason(dev, compute),
        packed_kernel_ms=kernels_ms,
        max_abs_diff_packed=float((packed_out - single_out).abs().max()),
        max_abs_diff_padded=float((padded_out - single_out).abs().max()),
    )


#: The columns of :func:`format_batching`, one row per way.
COLUMNS = (
    Column('way', lambda row: row['way'], 'left'),
    Column('clips/s', key('clips_per_s', '.3f')),
    Column('spread', lambda row: format_spread(row['spread'])),
    Column('GMACs/clip', key('gmacs_per_clip', '.2f')),
    Column('vs dense', speedup('vs_dense')),
)


def format_batching(result: Dict) -> str:
    """The figures of :func:`compare_batching` as a plain-text table."""
    tokens = result['tokens_per_clip']
    title = (
        f"{result['config']} on {result['device']} in "
        f"{result['precision']}: NEPAM threshold {result['threshold']:.4g}, "
        f"{result['batch_size']} clips keeping {min(tokens)} to "
        f"{max(tokens)} tokens (mean {100 * result['mean_token_share']:.1f}%"
        ' of them)')
    dense = result['ways']['dense']['clips_per_s']
    rows = [dict(fig, way=way, vs_dense=fig['clips_per_s'] / dense)
            for way, fig in result['ways'].items()]
    unknown = any(fig['spread'] is None for fig in result['ways'].values())
    notes = [
        f"packed: {result['packed_vs_dense']:.2f}x dense, "
        f"{result['packed_vs_padded']:.2f}x padded, "
        f"{result['packed_vs_clip_by_clip']:.2f}x clip by clip; max |packed "
        f"- clip by clip| = {result['max_abs_diff_packed']:.1e}, max |padded"
        f" - clip by clip| = {result['max_abs_diff_padded']:.1e}; packed "
        f"attention: {result['packed_kernel']}",
        'one packed attention call at these lengths: ' + ', '.join(
            f'{kernel} {ms:.2f} ms' if ms is not None else
            f'{kernel} - (does not run here)'
            for kernel, ms in result['packed_kernel_ms'].items()),
        "spread: (max - min) / median of the repeats' times"
        + (' (?: one repeat, unknown)' if unknown else '')
        + '; GMACs counted on the batch, per clip']
    return format_table(COLUMNS, rows, title=title, notes=notes)
