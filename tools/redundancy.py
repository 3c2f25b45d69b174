"""How redundant your clips are, before you choose a NEPAM budget.

Runs clips of the config's test set through its test pipeline and the
model's normalisation, scores every NEPAM window of every view as NEPAM
does (mmtokred.measure.redundancy), and prints for each window shape the
distance at which 10, 25, 50 and 75% of the windows would merge, absolute
and relative to the distance between random tubelet pairs of the same view,
and how many windows the config's own NEPAM setting merges. With
--merge-share, it prints NEPAM's threshold that merges each share of the
windows of these views (of the config's NEPAM window, or of every window
without one), as a config line and as --cfg-options.

    python tools/redundancy.py configs/videomae_nepam.py \
        --ann-file data/kinetics400/kinetics400_val_list_videos.txt \
        --data-prefix data/kinetics400/videos_val --clips 64 \
        [--merge-share 0.25 0.5]

The clips are decoded as they are scored, none kept; the labels of the list
are neither read nor checked (a list of paths will do).
"""
import argparse
import os.path as osp
import sys
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.fileio import list_from_file  # noqa: E402

import mmtokred.plugin  # noqa: E402,F401  (fixes, registers modules)
from mmtokred.arguments import integer, share  # noqa: E402
from mmtokred.data.checks import CheckedVideoDataset  # noqa: E402
from mmtokred.measure.redundancy import (WINDOWS, Redundancy,  # noqa: E402
                                         format_report)
from mmtokred.reducers import NEPAM, build_reducer  # noqa: E402

#: Where the config's NEPAM stage is, for --cfg-options.
STAGE = 'model.backbone.token_reduction.input'
#: Data sets of ``path label`` lists, read here as lists of paths.
VIDEO_LISTS = ('VideoDataset', 'CheckedVideoDataset')


class VideoPaths(CheckedVideoDataset):
    """``CheckedVideoDataset`` (bad videos named with their line) of the
    paths of a ``path [label ...]`` list, its labels neither read nor
    checked: the redundancy never uses them, and a list of paths will do.
    The samples carry no label."""

    def __init__(self, ann_file: str, pipeline: list,
                 num_classes: Optional[int] = None, **kwargs) -> None:
        kwargs['multi_class'] = False  # no label to one-hot
        # num_classes only bounds labels, which are not read.
        super().__init__(ann_file, pipeline, num_classes=num_classes
                         if isinstance(num_classes, int) and num_classes > 0
                         else 1, **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = []
        for number, line in enumerate(list_from_file(self.ann_file), 1):
            if not line.strip():
                continue
            filename = line.strip().split(self.delimiter)[0]
            if self.data_prefix['video'] is not None:
                filename = osp.join(self.data_prefix['video'], filename)
            data_list.append(dict(filename=filename, ann_line=number))
        if not data_list:
            raise ValueError(f'{self.ann_file} lists no videos: the '
                             'annotation file is empty')
        return data_list


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--ann-file', help='the list of clips (default: '
                        "the config's test_dataloader.dataset.ann_file)")
    parser.add_argument('--data-prefix', help='the folder of the videos '
                        "(default: the config's)")
    parser.add_argument('--clips', type=integer(1), default=64,
                        help='a seeded sample of this many clips (default '
                        '64; each gives the test pipeline\'s views)')
    parser.add_argument('--distance', default='l1', choices=('l1', 'l2'))
    parser.add_argument('--merge-share', type=share, nargs='+', default=[],
                        metavar='SHARE',
                        help="also print NEPAM's threshold that merges each "
                        'of these shares (in (0, 1]) of the windows of '
                        "these views: of the config's NEPAM window, or of "
                        'every window without one')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={})
    return parser.parse_args()


def config_nepam(cfg: Config) -> Optional[NEPAM]:
    """The config's NEPAM input stage, built (None without one)."""
    stage = (cfg.model.backbone.get('token_reduction') or {}).get('input')
    if not stage or stage.get('type') != 'NEPAM':
        return None
    return build_reducer(dict(stage))


def own_nepam(nepam: Optional[NEPAM], report: Redundancy) -> str:
    """What the config's NEPAM merges of these views."""
    if nepam is None:
        return 'the config has no NEPAM input stage'
    total = report.windows_per_view(nepam.window)
    if nepam.threshold is not None:
        share = report.merged_share(nepam.window, nepam.threshold)
        how = f'threshold {nepam.threshold}'
    else:
        share = nepam.merged_windows(report.grid) / total
        how = (f'ratio {nepam.ratio}' if nepam.ratio is not None else
               f'num_windows {nepam.num_windows}')
    return (f"the config's NEPAM ({'x'.join(map(str, nepam.window))}, "
            f'{how}) merges {share:.1%} of the {total} windows of a view '
            f'({share * total:.1f})')


def _value(value: object) -> str:
    """``value`` as a config file writes it (tuples with spaces)."""
    return repr(tuple(value) if isinstance(value, list) else value)


def _option(value: object) -> str:
    """``value`` as --cfg-options takes it (tuples without spaces)."""
    if isinstance(value, (list, tuple)):
        return '(' + ','.join(map(str, value)) + ')'
    return str(value)


def threshold_lines(cfg: Config, nepam: Optional[NEPAM],
                    report: Redundancy, shares: Sequence[float]) -> str:
    """For each share, NEPAM's threshold that merges it of the windows of
    these views, what it merges, and the config line and --cfg-options
    that set it: on the config's NEPAM stage (its budget replaced; its
    distance, if the report's is another), else a NEPAM stage of each
    window reported (replacing the config's other input stage, if any:
    in the config line only)."""
    reduction = cfg.model.backbone.get('token_reduction')
    stage = dict((reduction or {}).get('input') or {})
    other_stage = nepam is None and bool(stage)
    windows = report.windows if nepam is None else [nepam.window]
    distance = 'l1' if nepam is None else nepam.distance
    lines = [f"NEPAM's threshold for a share of merged windows (it merges "
             f'a window whose {report.distance} score is under it; over '
             f'these {report.views} views)']
    for window in windows:
        total = report.windows_per_view(window)
        for target in shares:
            threshold = report.merge_threshold(window, target)
            merged = report.merged_share(window, threshold)
            if nepam is None:
                changes = dict(type='NEPAM', window=window)
            else:  # the config's stage, its budget the threshold
                changes = {budget: None for budget in ('ratio',
                                                       'num_windows')
                           if stage.get(budget) is not None}
            changes['threshold'] = threshold
            if distance != report.distance:
                changes['distance'] = report.distance
            setting = dict(_delete_=True) if other_stage else {}
            setting.update(changes if nepam is None else dict(
                type='NEPAM', window=nepam.window, **changes))
            lines.append(
                f"  {'x'.join(map(str, window))}, {target:.0%} merged: "
                f'threshold {threshold!r} merges {merged:.1%} of the '
                f'windows ({merged * total:.1f} of {total} a view)')
            lines.append(
                '    config: model = dict(backbone=dict(token_reduction='
                'dict(input=dict(' + ', '.join(
                    f'{key}={_value(value)}'
                    for key, value in setting.items()) + '))))')
            if not other_stage:  # --cfg-options cannot delete a stage
                lines.append('    --cfg-options ' + ' '.join(
                    f'{STAGE}.{key}={_option(value)}'
                    for key, value in changes.items()))
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    dataset = cfg.test_dataloader.dataset
    if args.ann_file:
        dataset.ann_file = args.ann_file
    if args.data_prefix:
        dataset.data_prefix = dict(video=args.data_prefix)
    if isinstance(dataset.get('type'), str) and \
            dataset.type.split('.')[-1] in VIDEO_LISTS:
        dataset.type = VideoPaths  # the labels are not used: not read
    # Imported here: the plugin above applies the fixes mmaction needs.
    from mmaction.registry import MODELS

    from mmtokred.experiments.clips import Clips
    # One pass: each batch decoded as it is scored, none kept.
    clips = Clips(cfg, 'test', num_clips=args.clips, keep=False)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    backbone = cfg.model.backbone
    patch = backbone.get('patch_size', 16)
    windows = list(WINDOWS)
    nepam = config_nepam(cfg)
    if nepam is not None and nepam.window not in windows:
        windows.append(nepam.window)
    report = Redundancy((backbone.get('tubelet_size', 2), patch, patch),
                        windows, args.distance)
    for batch in clips.batches:
        views = preprocessor(batch, training=False)['inputs']
        report.add(views.flatten(0, 1))  # every view of every clip
    print(f'{len(clips)} clips of {clips.source}')
    print(format_report(report, own_nepam(nepam, report)))
    if args.merge_share:
        print(threshold_lines(cfg, nepam, report, args.merge_share))


if __name__ == '__main__':
    main()
