"""Bad data stops MMAction2's test loop with the file and the line named.

Unchanged, MMAction2 answers a broken video with decord's "Error reading N
bytes", an empty list with numpy's "need at least one array to concatenate",
and scores a label outside the model's classes (or a missing one, read as -1)
as a miss. :class:`CheckedVideoDataset` is ``VideoDataset`` with those turned
into errors that name the file and the line, an opt-in ``skip_unreadable``
for large copies with a few broken files, and a mark on clips whose frames
the sampler looped; :class:`DataCheckHook` reports both in the test and
validation loops. The project's configs use them (see docs/data.md).
"""
import logging
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Set, Union

import numpy as np
from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS, HOOKS
from mmengine.dataset import BaseDataset
from mmengine.dist import all_gather_object
from mmengine.fileio import list_from_file
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

#: Metainfo key of a data sample whose frames the sampler looped (its video
#: has fewer frames than the sampler spans); the value names the video.
LOOPED_KEY = 'looped_video'
# Videos opened at once by the skip_unreadable scan: decord opens outside
# the GIL (the proxy's 2000 test clips: 2.4 s in 1 thread, 1.6 s in 8 on 2
# cores; Kinetics' larger files gain more).
SCAN_THREADS = 8


def frames_looped(frame_inds: np.ndarray, clip_len: int) -> bool:
    """Whether a sampled clip steps back or stands still: the video is
    shorter than the sampler spans, so ``SampleFrames`` looped (or, with
    ``out_of_bound_opt='repeat_last'``, repeated) its frames."""
    clips = np.asarray(frame_inds).reshape(-1, clip_len)
    return bool((np.diff(clips, axis=1) <= 0).any())


@DATASETS.register_module()
class CheckedVideoDataset(VideoDataset):
    """``VideoDataset`` whose bad data raises naming the file and line.

    Building it reads the annotation file and raises ``ValueError`` on an
    empty file, a line without a label, or a label that is not an integer
    in ``[0, num_classes)``. Loading a video the pipeline cannot open or
    decode raises ``RuntimeError`` naming the video and its line. A clip
    whose frames the sampler looped carries ``LOOPED_KEY`` in its data
    sample's metainfo, for :class:`DataCheckHook` to count.

    Args:
        ann_file: ``path label`` lines, as for ``VideoDataset``.
        pipeline: the transforms; the first that sets ``total_frames``
            (``DecordInit``) is the one that opens the video.
        num_classes: labels must lie in ``[0, num_classes)``: the model's
            ``cls_head.num_classes``.
        skip_unreadable: open every video when the dataset is built and
            leave out, with one warning listing them, those that do not
            open; ``DataCheckHook`` reports how many as ``skipped_videos``.
        **kwargs: the other arguments of ``VideoDataset``.
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: List[Union[dict, Callable]],
                 num_classes: Optional[int] = None,
                 skip_unreadable: bool = False,
                 **kwargs) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                'CheckedVideoDataset needs num_classes, a positive integer '
                "(the model's cls_head.num_classes) to check the labels of "
                f'{ann_file} against, got {num_classes!r}')
        # Set before VideoDataset's __init__, which loads and filters.
        self.skip_unreadable = skip_unreadable
        self.skipped_videos: List[str] = []
        super().__init__(
            ann_file, pipeline, num_classes=num_classes, **kwargs)

    def load_data_list(self) -> List[dict]:
        """``VideoDataset``'s list, every label checked, each video's line
        number kept (``ann_line``) for the errors that name it."""
        data_list = []
        for number, line in enumerate(list_from_file(self.ann_file), 1):
            if not line.strip():
                continue  # a blank line (often the last) lists no video
            filename, *labels = line.strip().split(self.delimiter)
            where = f'{self.ann_file}, line {number}'
            if not labels:
                raise ValueError(f'{where}: no label after {filename!r}; '
                                 'each line is "path label"')
            if len(labels) > 1 and not self.multi_class:
                raise ValueError(
                    f'{where}: {len(labels)} labels for {filename!r}; one '
                    'is expected (multi_class=True takes several)')
            label = [self._check_label(text, where) for text in labels]
            if self.data_prefix['video'] is not None:
                filename = osp.join(self.data_prefix['video'], filename)
            data_list.append(
                dict(filename=filename,
                     label=label if self.multi_class else label[0],
                     ann_line=number))
        if not data_list:
            raise ValueError(f'{self.ann_file} lists no videos: the '
                             'annotation file is empty')
        return data_list

    def _check_label(self, text: str, where: str) -> int:
        try:
            label = int(text)
        except ValueError:
            raise ValueError(f'{where}: label {text!r} is not an integer in '
                             f'[0, {self.num_classes})') from None
        if not 0 <= label < self.num_classes:
            raise ValueError(
                f'{where}: label {label} is outside [0, {self.num_classes}) '
                f'(the dataset\'s num_classes={self.num_classes})')
        return label

    def filter_data(self) -> List[dict]:
        """Every video or, with ``skip_unreadable``, those that open."""
        if not self.skip_unreadable:
            return self.data_list
        with ThreadPoolExecutor(SCAN_THREADS) as pool:
            errors = list(pool.map(self._open_error, self.data_list))
        kept = [info for info, error in zip(self.data_list, errors)
                if error is None]
        bad = [(info, error) for info, error in zip(self.data_list, errors)
               if error is not None]
        self.skipped_videos = [info['filename'] for info, _ in bad]
        if bad:
            print_log(
                f'skip_unreadable: left out {len(bad)} of '
                f'{len(self.data_list)} videos of {self.ann_file} that do '
                'not open:\n' + '\n'.join(
                    f"  {info['filename']} (line {info['ann_line']}): {error}"
                    for info, error in bad),
                logger='current', level=logging.WARNING)
        if not kept:
            raise ValueError(f'none of the {len(self.data_list)} videos of '
                             f'{self.ann_file} opens (first: {bad[0][1]})')
        return kept

    def _open_error(self, info: dict) -> Optional[str]:
        """Why the pipeline cannot open the video of ``info``, or None."""
        results = dict(info, modality=self.modality,
                       start_index=self.start_index)
        for transform in self.pipeline.transforms:
            try:
                results = transform(results)
            except Exception as err:  # whatever stops it, it does not open
                return f'{type(err).__name__}: {err}'
            if 'total_frames' in results:
                return None if results['total_frames'] > 0 else 'no frames'
        raise ValueError(
            'skip_unreadable needs a pipeline that opens the videos (a '
            'transform that sets total_frames, such as DecordInit)')

    def prepare_data(self, idx: int) -> Any:
        """``self.pipeline`` run as ``Compose`` runs it, with failures named
        and looped clips marked."""
        results = self.get_data_info(idx)
        filename = results['filename']
        video = f"{filename} (line {results['ann_line']} of {self.ann_file})"
        opened, looped = False, None
        for transform in self.pipeline.transforms:
            try:
                results = transform(results)
            except Exception as err:
                raise RuntimeError(_failure(video, transform, opened,
                                            err)) from err
            if results is None:
                return None  # the transform dropped the sample
            if not opened and 'total_frames' in results:
                opened = True
                if results['total_frames'] < 1:
                    raise RuntimeError(f'video {video} has no frames')
            if looped is None and 'frame_inds' in results and \
                    'clip_len' in results:
                looped = frames_looped(results['frame_inds'],
                                       results['clip_len'])
        if looped and 'data_samples' in results:
            results['data_samples'].set_metainfo({LOOPED_KEY: filename})
        return results


def _failure(video: str, transform: Callable, opened: bool,
             err: Exception) -> str:
    cause = f'{type(err).__name__}: {err}'
    if not opened:
        return (f'cannot open video {video}: {cause} -- set '
                'skip_unreadable=True on the dataset to leave unreadable '
                'videos out with a warning (docs/data.md)')
    return f'{type(transform).__name__} failed on video {video}: {cause}'


@HOOKS.register_module()
class DataCheckHook(Hook):
    """Reports in the test and validation loops what
    :class:`CheckedVideoDataset` let through.

    Before the loop, the dataset's ``num_classes`` must equal the model's
    ``cls_head.num_classes``. After it, the metrics get ``skipped_videos``
    (the count of videos ``skip_unreadable`` left out, 0 included) and one
    warning counts the clips whose frames the sampler looped.
    """

    # Ahead of RuntimeInfoHook (VERY_HIGH), which hands the metrics to the
    # logger: skipped_videos must reach the final metrics line.
    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._looped: Set[str] = set()

    def before_val_epoch(self, runner) -> None:
        self._start(runner, runner.val_loop.dataloader.dataset, 'val')

    def before_test_epoch(self, runner) -> None:
        self._start(runner, runner.test_loop.dataloader.dataset, 'test')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None,
                       outputs=None) -> None:
        self._note(outputs)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs=None) -> None:
        self._note(outputs)

    def after_val_epoch(self, runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner.val_loop.dataloader.dataset, 'val', metrics)

    def after_test_epoch(self, runner,
                         metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner.test_loop.dataloader.dataset, 'test', metrics)

    def _start(self, runner, dataset: BaseDataset, mode: str) -> None:
        self._looped = set()
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        head = getattr(getattr(model, 'cls_head', None), 'num_classes', None)
        if isinstance(dataset, CheckedVideoDataset) and head is not None \
                and head != dataset.num_classes:
            raise ValueError(
                f'{mode}_dataloader.dataset.num_classes is '
                f'{dataset.num_classes} but model.cls_head.num_classes is '
                f'{head}: the labels were checked against the first; set '
                'both to the number of classes')

    def _note(self, outputs: Optional[list]) -> None:
        for sample in outputs or ():
            video = sample.metainfo.get(LOOPED_KEY)
            if video is not None:
                self._looped.add(video)

    def _report(self, dataset: BaseDataset, mode: str,
                metrics: Optional[Dict[str, float]]) -> None:
        # A set per rank: the sampler's padding repeats videos across ranks.
        looped = sorted(set().union(*all_gather_object(self._looped)))
        if looped:
            print_log(
                f'{len(looped)} of {len(dataset)} {mode} videos have fewer '
                'frames than the sampler spans; MMAction2 looped their '
                f"frames (e.g. {', '.join(looped[:3])})",
                logger='current', level=logging.WARNING)
        if getattr(dataset, 'skip_unreadable', False) and metrics is not None:
            metrics['skipped_videos'] = len(dataset.skipped_videos)
            if dataset.skipped_videos:
                print_log(
                    f'{len(dataset.skipped_videos)} unreadable videos of '
                    f'{dataset.ann_file} are not in the {mode} metrics '
                    '(listed when the dataset was built)',
                    logger='current', level=logging.WARNING)
