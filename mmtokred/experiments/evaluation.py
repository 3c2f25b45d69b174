"""A token reduction evaluated on decoded clips: top-1, agreement's
predictions, object retention and what the reducers reported.

Each test view runs the config's evaluator (MMAction2's, on clips decoded
once and kept in memory: :class:`~.clips.Clips`) through the model with the
token reduction. The object retention is the share of actor tubelets (the
``{list}_actor.npy`` masks of the generated proxy, where present) still held
by some token after the last block, read from the source map. A reduction
whose tokens depend on each clip (NEPAM's or ToMe's threshold) has its
FLOPs counted per view from the tokens it kept
(``ShapeFlops.clip_gflops``).
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config

from ..measure.flops import ShapeFlops
from ..measure.observe import TokenRecorder
from ..ops import TokenState
from ..ops.packed import split_clips
from .clips import Clips


def actor_masks(cfg: Config, clips: Clips) -> Optional[torch.Tensor]:
    """``(clips, tubelets)`` masks of where the actor is in each test clip
    (the ``{list}_actor.npy`` beside the generated proxy's test list), or
    None where there are none."""
    actor = Path(str(cfg.test_dataloader.dataset.ann_file)).with_suffix('')
    actor = actor.with_name(actor.name + '_actor.npy')
    if not actor.exists():
        return None
    masks = np.load(actor)
    if isinstance(cfg.test_dataloader.dataset.get('indices'), int):
        masks = masks[:len(clips)]  # the first clips of the list
    if len(masks) != len(clips):
        raise ValueError(f'{actor} has {len(masks)} masks for '
                         f'{len(clips)} clips of the test list')
    return torch.from_numpy(masks.reshape(len(masks), -1))


def held_tubelets(state: TokenState, views: int) -> torch.Tensor:
    """``(views, tubelets)``: whether some token of the final ``state``
    holds each tubelet (its source map), one row per view."""
    held = state.source.amax(1) if state.lengths is None else torch.cat(
        [clip.amax(1) for clip in split_clips(state.source, state.lengths)])
    if held.shape[0] != views:
        raise ValueError('object retention needs one view per clip (the '
                         'masks are per clip)')
    return held > 0


def share_held(held: List[torch.Tensor], actor: torch.Tensor) -> float:
    """Share of the ``actor`` tubelets some token ``held``."""
    return int((torch.cat(held).cpu() & actor).sum()) / int(actor.sum())


def reported(reducers: Sequence[torch.nn.Module]) -> Dict:
    """The ``branches`` the reducers took and PPT's ``statistic`` (its
    10/50/90th percentiles), their counts reset."""
    result = dict(branches={}, statistic=None)
    for reducer in reducers:
        result['branches'].update(reducer.branch_counts())
        observed = reducer.observations().get('statistic')
        if observed is not None:
            result['statistic'] = [
                float(q) for q in torch.quantile(
                    observed.float().cpu(), torch.tensor([0.1, 0.5, 0.9]))]
        reducer.reset_counts()
    return result


@torch.no_grad()
def evaluate(model: torch.nn.Module, clips: Clips,
             reduction: Optional[Dict],
             actor: Optional[torch.Tensor] = None,
             flops: Optional[ShapeFlops] = None) -> Dict:
    """Top-1 (the split's evaluator), predictions, object retention (with
    ``actor`` masks) and what the reducers reported, of ``model`` with
    ``reduction`` on ``clips``; with ``flops``, also the GFLOPs of each
    view (``clip_gflops``: from the tokens each kept), for reductions whose
    tokens depend on the clip."""
    backbone = model.backbone
    track = actor is not None and reduction is not None
    backbone.set_token_reduction(
        None if reduction is None else dict(reduction, track_source=track))
    reducers = backbone.token_reduction.reducers
    for reducer in reducers:
        reducer.observing = True
    held: List[torch.Tensor] = []
    predictions: List[int] = []
    clip_gflops: List[float] = []
    evaluator = clips.evaluator()
    recorder = TokenRecorder(backbone)
    for batch in clips.batches:
        with recorder:
            outputs = model.test_step(batch)
        evaluator.process(data_samples=outputs, data_batch=batch)
        predictions += [int(o.pred_score.argmax()) for o in outputs]
        if flops is not None:
            clip_gflops += [flops.clip_gflops(reduction, tokens)
                            for tokens in recorder.tokens_of_clips()]
        if track:
            held.append(held_tubelets(recorder.final_state, len(outputs)))
    metrics = evaluator.evaluate(len(clips))
    kept = None
    if actor is not None:  # untracked: dense, every tubelet held
        kept = share_held(held, actor) if track else 1.
    return dict(top1=float(metrics['acc/top1']), predictions=predictions,
                retention=kept, **reported(reducers),
                clip_gflops=clip_gflops or None)
