"""Figures the pages cite: the schedules docs/calibration.md gives build
and count the FLOPs it says; the figures of a paragraph that links other
pages of docs/ (README.md and the pages made from it) are in those pages.
"""
import math
import re
from typing import Dict, List, Set, Tuple

import pytest
from mmengine.config import Config

from conftest import ROOT
from mmtokred.measure.flops import ShapeFlops
from test_docs import INLINE, prose, tables

PROXY = 'configs/proxy/videomae_proxy_dense.py'
#: Pages whose cited figures are checked: README and the pages its
#: sections moved to.
CITING_PAGES = ('README.md', 'docs/usage.md', 'docs/results.md',
                'docs/overview.md')


@pytest.fixture(scope='module')
def proxy() -> ShapeFlops:
    return ShapeFlops(Config.fromfile(str(ROOT / PROXY)).model)


def schedule_setting(text: str) -> Dict:
    """The token_reduction a "chosen schedule" cell of docs/calibration.md
    describes, e.g. ``NEPAM 1x2x2 0.1; ToMe r=(28 x 7, 18); prop. attn on``
    (the selected-block reducers in blocks 1 to len(r), as calibrate writes
    them on the 8-block proxy)."""
    setting: Dict = {}
    for part in text.split('; '):
        m = re.fullmatch(r'NEPAM (\d)x(\d)x(\d) ([\d.]+)', part)
        if m:
            setting['input'] = dict(type='NEPAM',
                                    window=[int(g) for g in m.groups()[:3]],
                                    ratio=float(m[4]))
            continue
        m = re.fullmatch(r'(ToMe|JMP|PPT) r=\(([^)]*)\)'
                         r'(?:, threshold (-?[\d.]+))?(?: \(the default\))?',
                         part)
        if m:
            r: List[int] = []
            for item in m[2].split(', '):
                count, _, times = item.partition(' x ')
                r += [int(count)] * int(times or 1)
            blocks = dict(type=m[1], r=r)
            if m[1] != 'ToMe':
                blocks['blocks'] = list(range(1, len(r) + 1))
            if m[3]:
                blocks['threshold'] = float(m[3])
            setting['blocks'] = blocks
            continue
        m = re.fullmatch(r'prop\. attn (on|off)', part)
        if m:
            setting['proportional_attention'] = m[1] == 'on'
            continue
        raise AssertionError(f'cannot read the schedule part {part!r}')
    return setting


def test_calibrated_schedules_build_and_count_their_flops(proxy):
    text = (ROOT / 'docs' / 'calibration.md').read_text()
    checked, failures = 0, []
    for table in tables(text):
        header = table[0]
        if 'chosen schedule' not in header:
            continue
        column, flops = header.index('chosen schedule'), header.index('FLOPs')
        for row in table[1:]:
            setting = schedule_setting(row[column])
            try:
                ratio = proxy.gflops(setting) / proxy.dense
            except ValueError as exc:
                failures.append(f'{row[column]}: does not build: {exc}')
                continue
            if abs(ratio - float(row[flops])) > 5e-4 + 1e-9:
                failures.append(f'{row[column]}: FLOPs {ratio:.4f}, the '
                                f'table says {row[flops]}')
            checked += 1
    assert checked >= 16, f'only {checked} schedules found'
    assert not failures, '\n'.join(failures)


PROSE_FIGURE = re.compile(
    r'(?<![\w.])[-+]?\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?(?:x|%)(?!\w)'
    r'|(?<![\w.])[-+]?\d+\.\d+(?![\w.])')


def figure_values(text: str) -> Set[Tuple[float, str]]:
    """(value, unit) of every number of ``text``; unit x, % or ''."""
    return {(float(m[1]), m[2] or '')
            for m in re.finditer(
                r'(?<![\w.])[-+]?(\d+(?:\.\d+)?)(x|%)?(?!\w)', text)}


def prose_figure_found(figure: str, values: Set[Tuple[float, str]]) -> bool:
    """A README figure is among ``values`` by value (0.64 is 0.640) and unit;
    a range (``23-39%``) by its ends, the unit on the last (the page may
    write ``23 to 39%``)."""
    unit = figure[-1] if figure[-1] in 'x%' else ''
    ends = figure.rstrip('x%').lstrip('+-').split('-')
    wanted = [(float(e), None) for e in ends[:-1]] + [(float(ends[-1]), unit)]
    return all(any(math.isclose(value, v) and want in (None, u)
                   for v, u in values) for value, want in wanted)


def paragraphs(text: str) -> List[str]:
    """The prose paragraphs of ``text`` (fenced blocks and tables left
    out)."""
    return [p for p in re.split(r'\n[ \t]*\n', prose(text))
            if p.strip() and not p.lstrip().startswith(('|', '<!--'))]


def citing_paragraphs() -> List[Tuple[str, str, List[str]]]:
    """``(id, paragraph, cited pages)`` of the paragraphs of
    ``CITING_PAGES`` that link a page of docs/."""
    out = []
    for page in CITING_PAGES:
        path = ROOT / page
        for para in paragraphs(path.read_text()):
            cited = sorted({str((path.parent / c).resolve().relative_to(ROOT))
                            for c in re.findall(r'\]\(([\w/.]+\.md)', para)
                            if (path.parent / c).resolve() != path.resolve()})
            if cited:
                words = re.findall(r'\w+', INLINE.sub(
                    lambda m: m.group(1), para))[:5]
                out.append((f"{page}:{'_'.join(words)}", para, cited))
    return out


@pytest.mark.parametrize('para, cited', [
    pytest.param(para, cited, id=id_)
    for id_, para, cited in citing_paragraphs()])
def test_cited_figures_are_in_the_cited_pages(para, cited):
    values = set().union(*(figure_values((ROOT / c).read_text())
                           for c in cited))
    missing = [f for f in PROSE_FIGURE.findall(para)
               if not prose_figure_found(f, values)]
    assert not missing, f'{missing} not in {cited}:\n{para}'
