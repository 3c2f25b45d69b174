"""Every reducer on the VideoMAE backbone gives the pinned outputs
(tests/data/pinned_video.json, written by ``python tests/pinned_cases.py video
tests/data/pinned_video.json``): a refactoring of the reducers must not move
one bit. The cases and the comparison: tests/pinned_cases.py."""
import pytest

from pinned_cases import VIDEO_CASES, assert_pinned, load, video_outputs

PINNED = load('video')


def test_every_case_is_pinned():
    assert sorted(PINNED['cases']) == sorted(VIDEO_CASES)


@pytest.mark.parametrize('case', sorted(VIDEO_CASES))
def test_video_outputs_are_pinned(case):
    assert_pinned(video_outputs(case), PINNED, case)
