"""Every reducer on timm's ViTs (class, distillation and register tokens, or
none) and every paper setting gives the pinned outputs
(tests/data/pinned_timm.json, written by ``python tests/pinned_cases.py timm
tests/data/pinned_timm.json`` in the timm environment): a refactoring of the
reducers must not move one bit. The cases and the comparison:
tests/pinned_cases.py."""
import pytest

from pinned_cases import TIMM_CASES, assert_pinned, load, timm_outputs

PINNED = load('timm')


def test_every_case_is_pinned():
    assert sorted(PINNED['cases']) == sorted(TIMM_CASES)


@pytest.mark.parametrize('case', sorted(TIMM_CASES))
def test_timm_outputs_are_pinned(case):
    assert_pinned(timm_outputs(case), PINNED, case)
