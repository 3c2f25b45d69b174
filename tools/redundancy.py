"""How redundant your clips are, before you choose a NEPAM budget.

Runs clips of the config's test set through its test pipeline and the
model's normalisation, scores every NEPAM window of every view as NEPAM
does (mmtokred.measure.redundancy), and prints for each window shape the
distance at which 10, 25, 50 and 75% of the windows would merge, absolute
and relative to the distance between random tubelet pairs of the same view,
and how many windows the config's own NEPAM setting merges.

    python tools/redundancy.py configs/videomae_nepam.py \
        --ann-file data/kinetics400/kinetics400_val_list_videos.txt \
        --data-prefix data/kinetics400/videos_val --clips 64
"""
import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import Config, DictAction  # noqa: E402

import mmtokred.plugin  # noqa: E402,F401  (fixes, registers modules)
from mmtokred.measure.redundancy import (WINDOWS, Redundancy,  # noqa: E402
                                         format_report)
from mmtokred.reducers import NEPAM, build_reducer  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--ann-file', help='the list of clips (default: '
                        "the config's test_dataloader.dataset.ann_file)")
    parser.add_argument('--data-prefix', help='the folder of the videos '
                        "(default: the config's)")
    parser.add_argument('--clips', type=int, default=64,
                        help='a seeded sample of this many clips (default '
                        '64; each gives the test pipeline\'s views)')
    parser.add_argument('--distance', default='l1', choices=('l1', 'l2'))
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


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    dataset = cfg.test_dataloader.dataset
    if args.ann_file:
        dataset.ann_file = args.ann_file
    if args.data_prefix:
        dataset.data_prefix = dict(video=args.data_prefix)
    # Imported here: the plugin above applies the fixes mmaction needs.
    from mmaction.registry import MODELS

    from mmtokred.experiments.clips import Clips
    clips = Clips(cfg, 'test', num_clips=args.clips)
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


if __name__ == '__main__':
    main()
