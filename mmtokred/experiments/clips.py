"""Clips decoded once, and the model they are run through.

:class:`Clips` holds one of a config's data sets through one of its
pipelines, decoded once and kept in memory in batches (or, with
``keep=False``, decoded each time they are iterated): every clip in list
order (the sweep: the test set, as the test loop sees it), or a seeded
sample (the calibration). Under a distributed launcher each process keeps
its share of the batches (batch ``j`` on rank ``j % world``) and
:meth:`Clips.gather` puts per-clip figures of every process back in the
clips' order. It offers the config's evaluator of the split (the test
loop's metric) and the class distributions of the test loop's scores.
"""
import copy
import os
from typing import Optional

import numpy as np
import torch
from mmaction.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import checkpoint_fit
from .. import plugin  # noqa: F401  (registers the backbone and reducers)

SPLITS = ('train', 'val', 'test')


def recogniser(cfg: Config, checkpoint: Optional[str] = None,
               device: Optional[str] = None) -> nn.Module:
    """The config's model without token reduction, in eval mode on
    ``device`` (default: CUDA if present), with the weights of
    ``checkpoint`` (None: random ones, from torch's global generator),
    which must fit it unless the config's ``partial_load`` says what may
    stay unloaded (:mod:`mmtokred.checkpoint_fit`)."""
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.token_reduction = None
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        checkpoint_fit.load_checkpoint(model, checkpoint,
                                       cfg.get('partial_load'))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    return model.to(device).eval()


class Clips:
    """Clips of the config's ``split`` data set through the pipeline of
    its ``pipeline`` data loader, decoded once by that loader's workers
    (no more of them than the machine's CPUs: :meth:`workers`), and kept;
    or, with ``keep=False``, decoded as they are iterated and not kept.

    Args:
        cfg: the config.
        split: whose data set (its list, folder and options).
        pipeline: whose pipeline prepares the clips (None: ``split``'s).
        num_clips: a seeded sample of this many clips of the whole list,
            in list order (None: the data set as configured, its
            ``indices`` too).
        seed: of the sample.
        batch_size: clips per batch (None: the pipeline's data loader's).
        keep: decode every batch once, now, and keep them all in
            ``batches`` (a list: the sweep and the calibration go over them
            many times). False: ``batches`` decodes each batch as it is
            iterated and keeps none (each pass decodes again), for one pass
            over clips too many to hold (a ViT-B clip's 15 views: about 50
            MB).
    """

    def __init__(self, cfg: Config, split: str = 'test',
                 pipeline: Optional[str] = None,
                 num_clips: Optional[int] = None, seed: int = 0,
                 batch_size: Optional[int] = None,
                 keep: bool = True) -> None:
        pipeline = pipeline or split
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        if pipeline not in SPLITS:
            raise ValueError(f'pipeline must be one of {SPLITS}, got '
                             f'{pipeline!r}')
        if num_clips is not None and (not isinstance(num_clips, int)
                                      or num_clips < 1):
            raise ValueError(f'clips must be a positive integer, got '
                             f'{num_clips!r}')
        init_default_scope(cfg.get('default_scope', 'mmaction'))
        loader = cfg[f'{pipeline}_dataloader']
        dataset_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
        dataset_cfg.pipeline = copy.deepcopy(loader.dataset.pipeline)
        dataset_cfg.test_mode = True
        if num_clips is not None:
            dataset_cfg.pop('indices', None)  # sampled from the whole list
        dataset = DATASETS.build(dataset_cfg)
        self.split = split
        #: The list the clips come from.
        self.source = str(dataset_cfg.get('ann_file'))
        if len(dataset) == 0:
            raise ValueError(f'the {split} data set ({self.source}) is empty')
        if num_clips is None:
            self.indices = list(range(len(dataset)))
        else:
            order = np.random.default_rng(seed).permutation(len(dataset))
            self.indices = sorted(
                int(i) for i in order[:min(num_clips, len(dataset))])
        batch_size = batch_size or loader.get('batch_size', 8)
        chunks = [self.indices[i:i + batch_size]
                  for i in range(0, len(self.indices), batch_size)]
        #: Clips in each batch of every process, in order.
        self.chunk_sizes = [len(c) for c in chunks]
        rank, world = get_dist_info()
        #: The data loader's workers that decode (:meth:`workers`).
        self.num_workers = self.workers(loader.get('num_workers', 0))
        batches = DataLoader(
            dataset, batch_sampler=chunks[rank::world],
            num_workers=self.num_workers, collate_fn=pseudo_collate)
        #: This process's batches, in order: a list (``keep``), else the
        #: data loader, which decodes them anew on each pass.
        self.batches = list(batches) if keep else batches
        self.metainfo = getattr(dataset, 'metainfo', None)
        self._cfg = cfg

    def __len__(self) -> int:
        return len(self.indices)

    @staticmethod
    def workers(configured: int) -> int:
        """``configured`` data loader workers, at most one per CPU this
        process may run on (torch's own rule, which warns above it:
        ``os.sched_getaffinity`` where there is one, else
        ``os.cpu_count()``; as configured where neither tells)."""
        if hasattr(os, 'sched_getaffinity'):
            cpus = len(os.sched_getaffinity(0))
        else:
            cpus = os.cpu_count()
        return min(configured, cpus) if cpus else configured

    def evaluator(self) -> Evaluator:
        """A fresh evaluator of the split (``test_evaluator`` for the test
        split), as its loop builds it."""
        evaluator = Evaluator(copy.deepcopy(
            self._cfg[f'{self.split}_evaluator']))
        if self.metainfo is not None:
            evaluator.dataset_meta = self.metainfo
        return evaluator

    def gather(self, local: Tensor) -> Tensor:
        """Every clip's rows in the clips' order, from this process's rows
        (of its batches, in order) and every other's."""
        parts = all_gather_object(local)
        world = len(parts)
        rows, offsets = [], [0] * world
        for j, size in enumerate(self.chunk_sizes):
            rank = j % world
            rows.append(parts[rank][offsets[rank]:offsets[rank] + size])
            offsets[rank] += size
        return torch.cat(rows)

    @torch.no_grad()
    def class_distributions(self, model: nn.Module) -> Tensor:
        """``(clips, classes)`` log-probabilities of the test loop's
        scores, every process's clips: the head's averaged probabilities
        (``average_clips='prob'``), or the softmax of its averaged
        scores."""
        probabilities = getattr(model.cls_head, 'average_clips',
                                None) == 'prob'
        outputs = []
        for batch in self.batches:
            scores = torch.stack([s.pred_score.float()
                                  for s in model.test_step(batch)])
            outputs.append(scores.clamp_min(1e-12).log() if probabilities
                           else scores.log_softmax(-1))
        return self.gather(torch.cat(outputs).cpu().double())
