"""Bad data stops the test loop naming the file and the line (issue 12):
CheckedVideoDataset and DataCheckHook of mmtokred.data.checks."""
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, run_tool, test_metrics
from mmaction.registry import DATASETS, TRANSFORMS
from mmengine.config import Config
from mmengine.runner import Runner

from mmtokred.data import checks, write_video_dataset

GOOD = ['clip_00000.mp4', 'clip_00001.mp4', 'clip_00002.mp4']
BAD = ['random.mp4', 'truncated.mp4', 'empty.mp4']
MISSING = 'absent.mp4'
# The demo samples 8 frames, every 2nd: it spans 15 frames of a clip.
SHORT = 'short.mp4'


@pytest.fixture(scope='module')
def videos(tmp_path_factory) -> Path:
    """Three good 32-frame clips, a 6-frame one and three broken files."""
    root = tmp_path_factory.mktemp('data_checks')
    video_dir, _ = write_video_dataset(str(root), num_videos=len(GOOD))
    short_dir, _ = write_video_dataset(str(root / 'short'), num_videos=1,
                                       num_frames=6)
    shutil.copy(short_dir / 'clip_00000.mp4', video_dir / SHORT)
    good = (video_dir / GOOD[1]).read_bytes()
    (video_dir / 'random.mp4').write_bytes(
        np.random.default_rng(0).bytes(len(good)))
    (video_dir / 'truncated.mp4').write_bytes(good[:len(good) // 2])
    (video_dir / 'empty.mp4').write_bytes(b'')
    return video_dir


def dataset_cfg(videos: Path, ann_file: Path, lines: List[str],
                **options) -> Dict:
    ann_file.write_text(''.join(line + '\n' for line in lines))
    pipeline = Config.fromfile(TINY_CONFIG).test_dataloader.dataset.pipeline
    return dict(dict(type='CheckedVideoDataset', ann_file=str(ann_file),
                     data_prefix=dict(video=str(videos)), pipeline=pipeline,
                     num_classes=4, test_mode=True), **options)


def build(videos: Path, tmp_path: Path, lines: List[str], **options):
    return DATASETS.build(
        dataset_cfg(videos, tmp_path / 'list.txt', lines, **options))


def test_the_project_configs_use_the_checks():
    for config in ('videomae_dense.py', 'demo/videomae_tiny_dense.py',
                   'proxy/videomae_proxy_nepam.py'):
        cfg = Config.fromfile(TINY_CONFIG.parents[1] / config)
        assert cfg.test_dataloader.dataset.type == 'CheckedVideoDataset'
        assert cfg.test_dataloader.dataset.num_classes == \
            cfg.model.cls_head.num_classes
        assert dict(type='DataCheckHook') in cfg.custom_hooks


def test_good_clips_load_as_in_video_dataset(videos, tmp_path):
    lines = [f'{name} {label}' for label, name in enumerate(GOOD)]
    checked = build(videos, tmp_path, lines)
    plain_cfg = dataset_cfg(videos, tmp_path / 'plain.txt', lines)
    del plain_cfg['num_classes']
    plain = DATASETS.build(dict(plain_cfg, type='VideoDataset'))
    assert len(checked) == len(plain) == 3
    for index in range(3):
        ours, theirs = checked[index], plain[index]
        assert torch.equal(ours['inputs'], theirs['inputs'])
        assert ours['data_samples'].gt_label == index
        assert ours['data_samples'].metainfo == \
            theirs['data_samples'].metainfo


@pytest.mark.parametrize('broken', BAD + [MISSING])
def test_unreadable_video_is_named_with_its_line(videos, tmp_path, broken):
    dataset = build(videos, tmp_path, [f'{GOOD[0]} 0', f'{broken} 1'])
    dataset[0]
    with pytest.raises(RuntimeError) as error:
        dataset[1]
    message = str(error.value)
    assert message.startswith(f'cannot open video {videos / broken} '
                              f'(line 2 of {tmp_path / "list.txt"})')
    assert 'skip_unreadable=True' in message


def test_skip_unreadable_leaves_out_and_lists_them(videos, tmp_path,
                                                   monkeypatch):
    warnings = []
    monkeypatch.setattr(checks, 'print_log',
                        lambda message, **kwargs: warnings.append(message))
    lines = [f'{GOOD[0]} 0', f'{BAD[0]} 1', f'{GOOD[1]} 1', f'{BAD[1]} 2',
             f'{BAD[2]} 3', f'{GOOD[2]} 2']
    dataset = build(videos, tmp_path, lines, skip_unreadable=True)
    assert [dataset.get_data_info(i)['filename'] for i in range(3)] == \
        [str(videos / name) for name in GOOD]
    assert dataset.skipped_videos == [str(videos / name) for name in BAD]
    assert len(warnings) == 1
    assert 'left out 3 of 6 videos' in warnings[0]
    for name, line in zip(BAD, (2, 4, 5)):
        assert f'{videos / name} (line {line}): ' in warnings[0]


def test_skip_unreadable_with_nothing_readable_raises(videos, tmp_path):
    with pytest.raises(ValueError, match='none of the 2 videos'):
        build(videos, tmp_path, [f'{BAD[0]} 0', f'{BAD[2]} 1'],
              skip_unreadable=True)


@pytest.mark.parametrize('text', ['', '\n\n'])
def test_empty_annotation_file_is_named(videos, tmp_path, text):
    ann_file = tmp_path / 'empty.txt'
    cfg = dataset_cfg(videos, ann_file, [])
    ann_file.write_text(text)
    with pytest.raises(ValueError, match=re.escape(
            f'{ann_file} lists no videos: the annotation file is empty')):
        DATASETS.build(cfg)


@pytest.mark.parametrize('line, error', [
    (f'{GOOD[1]} 4', r'line 2: label 4 is outside \[0, 4\)'),
    (f'{GOOD[1]} -1', r'line 2: label -1 is outside \[0, 4\)'),
    (GOOD[1], "line 2: no label after 'clip_00001.mp4'"),
    (f'{GOOD[1]} one', r"line 2: label 'one' is not an integer in \[0, 4\)"),
    (f'{GOOD[1]} 1 2', 'line 2: 2 labels for'),
])
def test_bad_label_is_named_with_its_line(videos, tmp_path, line, error):
    where = re.escape(f'{tmp_path / "list.txt"}, ')
    with pytest.raises(ValueError, match=where + error):
        build(videos, tmp_path, [f'{GOOD[0]} 0', line, f'{GOOD[2]} 3'])


def test_num_classes_is_required(videos, tmp_path):
    with pytest.raises(ValueError, match='needs num_classes'):
        build(videos, tmp_path, [f'{GOOD[0]} 0'], num_classes=None)


@pytest.mark.parametrize('out_of_bound', ['loop', 'repeat_last'])
@pytest.mark.parametrize('total_frames', [8, 14, 15, 16, 40])
def test_looped_frames_are_those_sample_frames_wraps(total_frames,
                                                     out_of_bound):
    sampler = TRANSFORMS.build(
        dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=2,
             test_mode=True, out_of_bound_opt=out_of_bound))
    results = sampler(dict(total_frames=total_frames, start_index=0))
    assert checks.frames_looped(results['frame_inds'], 8) == \
        (total_frames < 15)


def test_short_clip_is_marked_and_keeps_looping(videos, tmp_path):
    dataset = build(videos, tmp_path, [f'{GOOD[0]} 0', f'{SHORT} 1'])
    assert checks.LOOPED_KEY not in dataset[0]['data_samples'].metainfo
    short = dataset[1]
    assert short['data_samples'].metainfo[checks.LOOPED_KEY] == \
        str(videos / SHORT)
    assert short['inputs'].shape == dataset[0]['inputs'].shape


def run_runner(videos: Path, tmp_path: Path, lines: List[str],
               **cfg_options) -> str:
    """Test the tiny demo model (random weights) on ``lines``; the log."""
    ann_file = tmp_path / 'list.txt'
    ann_file.write_text(''.join(line + '\n' for line in lines))
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict({
        'work_dir': str(tmp_path / 'work'),
        'experiment_name': tmp_path.name,
        'test_dataloader.dataset.ann_file': str(ann_file),
        'test_dataloader.dataset.data_prefix.video': str(videos),
        **cfg_options
    })
    runner = Runner.from_cfg(cfg)
    runner.test()
    return Path(runner.log_dir, f'{runner.timestamp}.log').read_text()


def test_runner_stops_on_an_unreadable_video(videos, tmp_path):
    message = re.escape(f'cannot open video {videos / BAD[0]} (line 2 of')
    with pytest.raises(RuntimeError, match=message):
        run_runner(videos, tmp_path, [f'{GOOD[0]} 0', f'{BAD[0]} 1'])


def test_runner_stops_when_dataset_and_model_classes_differ(videos,
                                                            tmp_path):
    with pytest.raises(ValueError, match='test_dataloader.dataset.num_classes'
                       ' is 4 but model.cls_head.num_classes is 5'):
        run_runner(videos, tmp_path, [f'{GOOD[0]} 0'],
                   **{'model.cls_head.num_classes': 5})


def test_good_clips_report_nothing(videos, tmp_path):
    log = run_runner(videos, tmp_path, [f'{GOOD[0]} 0', f'{GOOD[1]} 1'])
    assert 'Epoch(test)' in log
    assert 'skipped_videos' not in log and 'looped' not in log


def test_test_tool_counts_skipped_and_short_videos(videos, tmp_path,
                                                   tiny_checkpoint):
    # Not the random or truncated file: decord prints their bytes to stderr.
    ann_file = tmp_path / 'list.txt'
    ann_file.write_text(f'{GOOD[0]} 0\n{MISSING} 1\n{SHORT} 1\n{BAD[2]} 2\n'
                        f'{GOOD[2]} 2\n')
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG), tiny_checkpoint,
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        f'test_dataloader.dataset.ann_file={ann_file}',
        f'test_dataloader.dataset.data_prefix.video={videos}',
        'test_dataloader.dataset.skip_unreadable=True'
    ])
    output = result.stdout + result.stderr
    final = [line for line in output.splitlines() if 'Epoch(test)' in line]
    assert 'skipped_videos: 2 ' in final[-1]
    assert set(test_metrics(output)) == {'acc/top1', 'acc/top5', 'acc/mean1'}
    assert 'left out 2 of 5 videos' in output
    assert output.count('looped') == 1
    assert '1 of 3 test videos have fewer frames than the sampler spans; ' \
        f'MMAction2 looped their frames (e.g. {videos / SHORT})' in output
