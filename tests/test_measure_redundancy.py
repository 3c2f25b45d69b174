"""The redundancy statistics (mmtokred.measure.redundancy) exact on
hand-made clips, and tools/redundancy.py on generated ones."""
import sys

import pytest
import torch

from conftest import TINY_CONFIG, run_tool
from mmtokred.measure.redundancy import (Redundancy, pair_distances,
                                         share_distance)


def test_share_distances_are_the_order_statistics():
    # One frame of 8 one-pixel tubelets: 1x1x2 windows (0, 1), (0, 2),
    # (0, 3), (0, 4) score half their difference (the reference's own 0 is
    # in the mean): 0.5, 1, 1.5, 2.
    clip = torch.tensor([0., 1, 0, 2, 0, 3, 0, 4]).reshape(1, 1, 1, 1, 8)
    report = Redundancy((1, 1, 1), windows=[(1, 1, 2)])
    report.add(clip)
    assert report.windows_per_view((1, 1, 2)) == 4
    # ceil(q * 4)-th smallest: 1st, 1st, 2nd, 3rd.
    assert report.share_distances((1, 1, 2)) == [0.5, 0.5, 1.0, 1.5]
    assert report.merged_share((1, 1, 2), 1.2) == 0.5
    assert share_distance(torch.tensor([3., 1., 2.]), 1.0) == 3.0


def test_relative_distances_divide_by_the_pair_distance():
    # Two tubelets: every pair of distinct ones is 3 apart (l1) or 9 (l2).
    clip = torch.tensor([0., 3.]).reshape(1, 1, 1, 1, 2)
    pixels = clip.reshape(1, 2, 1)
    assert pair_distances(pixels, 'l1').tolist() == [3.0]
    assert pair_distances(pixels, 'l2').tolist() == [9.0]
    report = Redundancy((1, 1, 1), windows=[(1, 1, 2)])
    report.add(clip)
    assert report.share_distances((1, 1, 2), relative=True) == [0.5] * 4


def test_bad_distance_is_named():
    with pytest.raises(ValueError, match='distance'):
        Redundancy((2, 16, 16), distance='cosine')


def test_redundancy_tool_on_generated_clips(video_data):
    out = run_tool([
        sys.executable, 'tools/redundancy.py',
        str(TINY_CONFIG.parent / 'videomae_tiny_nepam.py'),
        '--ann-file', video_data['ann_file'],
        '--data-prefix', video_data['videos'], '--clips', '3']).stdout
    lines = out.splitlines()
    assert lines[0].startswith('3 clips of ')
    for window in ('2x1x1', '1x1x2', '1x2x2', '2x2x2'):
        row = next(line for line in lines if line.startswith(window))
        assert row.count(' / ') == 4, row
    assert "the config's NEPAM" in lines[-1]
