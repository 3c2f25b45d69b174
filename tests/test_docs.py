"""The docs against the code (issue 20): the settings, command lines and
figures README.md and docs/ state are checked here, so that a change to
either side fails a test.

- docs/*.csv: every token_reduction builds on the model that produced it and
  counts the row's gflops; the header is the sweep's, less the columns the
  docs say these tables predate.
- Settings written in the pages (``token_reduction=dict(...)``,
  ``--cfg-options model.backbone.token_reduction...``, calibration.md's
  chosen schedules) build on the model the page names; every config named
  exists, every config under configs/ builds; checkpoint globs in the pages'
  loops expand to one file.
- Every ``tools/X.py --flag`` of the pages is a flag of that tool.
- README's figures are in the pages it cites.

Fast: one model per architecture, FLOPs counted on the meta device (the same
counter as the sweep's; one test checks that they agree).
"""
import argparse
import ast
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
import torch
from mmengine.config import Config, DictAction

from conftest import ROOT, run_tool
from mmaction.registry import MODELS
from mmtokred.experiments import sweep as sweep_module
from mmtokred.measure.flops import ShapeFlops

PROXY = 'configs/proxy/videomae_proxy_dense.py'
VIT_B = 'configs/videomae_dense.py'

#: docs/*.csv -> (the page that describes it, the config it was made with).
CSV_SOURCES = {
    'proxy_sweep.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_proportional.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_pretrained.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_pretrained_light.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_pretrained_prop.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_pretrained_ppt_threshold.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_pretrained_ppt_high.csv': ('proxy_results.md', PROXY),
    'proxy_sweep_scratch.csv': ('proxy.md', PROXY),
    'calibration_sweep.csv': ('calibration.md', PROXY),
    'calibration_sweep_4000.csv': ('calibration.md', PROXY),
    'calibration_sweep_pretrained.csv': ('calibration.md', PROXY),
    'packed_sweep.csv': ('packed.md', PROXY),
}
#: Columns of the sweep that the docs/*.csv tables written before the points
#: took turns lack (the speed spread and its noisy mark), those tables, and
#: the words of proxy_results.md that say so.
NOT_IN_DOCS_CSV = ('speed_spread', 'noisy')
WRITTEN_BEFORE_TURNS = ('proxy_sweep.csv', 'proxy_sweep_proportional.csv',
                        'calibration_sweep.csv', 'calibration_sweep_4000.csv')
SAID_NOT_IN_DOCS_CSV = 'no `speed_spread` or `noisy` columns'

#: Pages whose ``token_reduction=dict(...)`` snippets are settings of one
#: model: the page -> that model's config.
SNIPPET_MODELS = {'methods.md': VIT_B}

#: Tools that import timm, which the main environment lacks: their flags are
#: read from their argparse calls instead of their --help.
TIMM_TOOLS = ('eval_timm.py', 'benchmark_timm.py')
#: Wrappers that pass their arguments on to a Python tool.
WRAPPERS = {'dist_test.sh': 'test.py', 'dist_train.sh': 'train.py'}
#: Inline code with flags of other projects' command lines, quoted as such.
FOREIGN_FLAGS = {
    '--r_tokens 50 --pp_loc_list 3 6 9 --threshold 7e-5':
    "the official PPT code's command line (xjwu1024/PPT README)",
}

#: README "## Results" rows -> the point of proxy_results.md's first table
#: (method, target) whose top-1 change its "proxy" figure is.
PROXY_POINTS = {
    'videomae_nepam.py': ('nepam:proportional_attention=True', '0.70'),
    'videomae_nepam_half.py': ('nepam_2x2x2', '0.50'),
    'videomae_tome.py': ('tome:proportional_attention=True', '0.50'),
    'videomae_ppt.py': ('ppt:proportional_attention=True,threshold=8',
                        '0.60'),
    'videomae_jmp.py': ('jmp:proportional_attention=True', '0.90'),
    'videomae_patchsim.py': ('progressive:proportional_attention=True',
                             '0.60'),
}


def pages() -> List[Path]:
    return [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


# ---------------------------------------------------------------- markdown

FENCE = re.compile(r'^```[^\n]*\n(.*?)^```[ \t]*$', re.S | re.M)
INLINE = re.compile(r'`([^`\n]+)`')
TOOL = re.compile(r'(?<![\w./-])tools/([\w-]+\.(?:py|sh))')
FLAG = re.compile(r'^\[?(--?[A-Za-z][\w-]*)')
CONFIG_PATH = re.compile(r'(?<![\w./-])(configs/[\w./-]+\.py)')


def code_blocks(text: str) -> List[Tuple[int, str]]:
    """``(offset, code)`` of the fenced blocks."""
    return [(m.start(1), m.group(1)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """``text`` with the fenced blocks blanked (offsets kept)."""
    return FENCE.sub(lambda m: ' ' * len(m.group(0)), text)


def code_spans(text: str) -> List[Tuple[int, str, str]]:
    """``(offset, kind, code)``: fenced blocks ('block') and inline code
    outside them ('inline'), in the order of the page."""
    spans = [(o, 'block', c) for o, c in code_blocks(text)]
    spans += [(m.start(1), 'inline', m.group(1))
              for m in INLINE.finditer(prose(text))]
    return sorted(spans)


def paragraphs(text: str) -> List[Tuple[int, str]]:
    """``(offset, text)`` of the prose paragraphs (fenced blocks left out)."""
    text = prose(text)
    out, start = [], 0
    for m in re.finditer(r'\n[ \t]*\n', text + '\n\n'):
        chunk = text[start:m.start()]
        if chunk.strip():
            out.append((start, chunk))
        start = m.end()
    return out


def commands(code: str) -> Iterator[str]:
    """Shell commands of ``code``: continuations joined, comments dropped,
    split at newlines, ``;`` and ``&&``."""
    code = re.sub(r'\\\n', ' ', code)
    for line in code.split('\n'):
        line = re.sub(r'(^|\s)#.*', '', line)
        yield from re.split(r'&&|;', line)


def section(text: str, title: str) -> str:
    m = re.search(rf'^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)', text,
                  re.S | re.M)
    assert m, f'no section "## {title}"'
    return m.group(1)


def tables(text: str) -> List[List[List[str]]]:
    """The markdown tables of ``text``: rows of cells, header first."""
    out, rows = [], []
    for line in text.splitlines() + ['']:
        if line.startswith('|'):
            if not set(line) <= set('|-: '):
                rows.append([c.strip() for c in line.strip()[1:-1].split('|')])
        elif rows:
            out.append(rows)
            rows = []
    return out


def balanced_call(text: str, start: int) -> str:
    """``text[start:]`` up to the parenthesis that closes the first one."""
    depth = 0
    for i in range(text.index('(', start), len(text)):
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    raise AssertionError(f'unbalanced: {text[start:start + 80]!r}')


def line_of(text: str, offset: int) -> int:
    return text.count('\n', 0, offset) + 1


# ------------------------------------------------------------------ models

_MODELS: Dict[str, torch.nn.Module] = {}


def config(path: str, options: Optional[Dict] = None) -> Config:
    cfg = Config.fromfile(str(ROOT / path))
    cfg.merge_from_dict(options or {})
    return cfg


def architecture(backbone) -> str:
    """The backbone config without its token reduction, as a key."""
    return json.dumps({k: v for k, v in backbone.to_dict().items()
                       if k != 'token_reduction'}, sort_keys=True,
                      default=str)


def backbone_for(cfg: Config) -> torch.nn.Module:
    """A backbone of ``cfg``'s architecture with random weights, built once
    per architecture (reduction off); set a token reduction on it with
    ``set_token_reduction``, the check the backbone's build runs."""
    key = architecture(cfg.model.backbone)
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = MODELS.build(
            dict(cfg.model.backbone, token_reduction=None)).eval()
    return _MODELS[key]


def builds(cfg: Config, reduction) -> Optional[str]:
    """None if ``reduction`` builds on ``cfg``'s backbone, else why not."""
    try:
        backbone_for(cfg).set_token_reduction(reduction)
    except (ValueError, TypeError, KeyError) as exc:
        return f'{type(exc).__name__}: {exc}'
    return None


@pytest.fixture(scope='module')
def proxy() -> ShapeFlops:
    """The proxy's FLOPs counted as the sweep counts them (the closed form,
    equal to the counter: tests/test_measure_flops.py)."""
    return ShapeFlops(config(PROXY).model)


# ------------------------------------------------------------- (a) the CSVs


def read_csv(name: str) -> Tuple[List[str], List[Dict[str, str]]]:
    with open(ROOT / 'docs' / name, newline='') as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def sweep_columns() -> List[str]:
    """The columns of today's sweep rows: the keywords of the row dict in
    mmtokred.experiments.sweep.sweep (write_table writes them in order)."""
    tree = ast.parse((ROOT / 'mmtokred/experiments/sweep.py').read_text())
    function = next(n for n in tree.body
                    if isinstance(n, ast.FunctionDef) and n.name == 'sweep')
    for node in ast.walk(function):
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'append'
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == 'rows'):
            (row, ) = node.args
            assert isinstance(row, ast.Call) and row.func.id == 'dict'
            return [k.arg for k in row.keywords
                    if k.arg not in sweep_module.JSON_ONLY]
    raise AssertionError('no rows.append(dict(...)) in sweep()')


def test_every_csv_is_linked_from_the_page_that_names_its_model():
    assert sorted(p.name for p in (ROOT / 'docs').glob('*.csv')) == \
        sorted(CSV_SOURCES), 'a CSV in docs/ is not in CSV_SOURCES (or gone)'
    for name, (page, cfg) in CSV_SOURCES.items():
        text = (ROOT / 'docs' / page).read_text()
        assert f']({name})' in text, f'docs/{page} does not link {name}'
        assert f'tools/sweep.py {cfg}' in text, \
            f'docs/{page} does not run tools/sweep.py on {cfg} ({name})'


def test_csv_headers_are_the_sweeps_less_the_columns_said_missing():
    columns = sweep_columns()
    assert set(NOT_IN_DOCS_CSV) <= set(columns), \
        f'the sweep no longer writes {NOT_IN_DOCS_CSV}: update the docs'
    without = [c for c in columns if c not in NOT_IN_DOCS_CSV]
    for name in CSV_SOURCES:
        header, _ = read_csv(name)
        expected = without if name in WRITTEN_BEFORE_TURNS else columns
        assert header == expected, f'docs/{name}: header {header}'
    text = (ROOT / 'docs' / 'proxy_results.md').read_text()
    assert SAID_NOT_IN_DOCS_CSV in ' '.join(text.split()), \
        'docs/proxy_results.md no longer says the CSVs lack ' \
        f'{NOT_IN_DOCS_CSV}'
    proxy_md = (ROOT / 'docs' / 'proxy.md').read_text()
    for column in NOT_IN_DOCS_CSV:
        assert f'`{column}`' in proxy_md, \
            f'docs/proxy.md no longer describes the sweep column {column}'


def csv_settings() -> Dict[Tuple[str, str], List[Tuple[str, Dict]]]:
    """(config, token_reduction JSON) -> [(csv, row)]."""
    out: Dict[Tuple[str, str], List[Tuple[str, Dict]]] = {}
    for name, (_, cfg) in CSV_SOURCES.items():
        for row in read_csv(name)[1]:
            out.setdefault((cfg, row['token_reduction']), []).append(
                (name, row))
    return out


def test_csv_settings_build_and_count_their_gflops(proxy):
    settings = csv_settings()
    assert {cfg for cfg, _ in settings} == {PROXY}  # one model to count on
    failures = []
    for (_, setting), rows in settings.items():
        where = sorted({f"{n}: {r['method']} {r['target'] or '-'}"
                        for n, r in rows})
        try:
            reduction = json.loads(setting)
            per_clip = proxy.depends_on_clips(reduction)
            gflops = None if per_clip else proxy.gflops(reduction)
        except (ValueError, TypeError, KeyError) as exc:
            failures.append(f'{setting} ({where}) does not build: {exc}')
            continue
        for name, row in rows:
            recorded = float(row['gflops'])
            ratio = float(row['flops_ratio'])
            if per_clip:  # the mean of its clips' counts: not timed, less
                if row['speedup'] or not 0 < recorded <= proxy.dense:
                    failures.append(f'{name}: {row["method"]}: a per-clip '
                                    'budget with a speed or past dense')
            elif not math.isclose(gflops, recorded, rel_tol=1e-9):
                failures.append(f'{name}: {row["method"]} {row["target"]}: '
                                f'{setting} counts {gflops}, the row says '
                                f'{recorded}')
            if not math.isclose(ratio, recorded / proxy.dense,
                                rel_tol=1e-9):
                failures.append(f'{name}: {row["method"]}: flops_ratio '
                                f'{ratio} is not gflops / dense')
    assert not failures, '\n'.join(failures)


# -------------------------------------------------- (b) settings and configs


def cfg_options(tokens: List[str]) -> Dict:
    """``--cfg-options`` values as tools/test.py parses them."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *tokens]).cfg_options


def written_settings() -> List[Tuple[str, str, Dict, str]]:
    """``(where, config, options, what)``: token reductions the pages write,
    each as cfg options on the config of the model the page names."""
    out = []
    for page in pages():
        text = page.read_text()
        name = page.name
        named: List[Tuple[int, str]] = [
            (m.start(), m.group(1)) for m in CONFIG_PATH.finditer(text)]

        def config_before(offset: int) -> Optional[str]:
            before = [c for o, c in named if o < offset]
            return before[-1] if before else None

        for offset, kind, code in code_spans(text):
            where = f'{name}:{line_of(text, offset)}'
            # --cfg-options model.backbone.token_reduction...=...
            for cmd in commands(code):
                tokens = cmd.split()
                if '--cfg-options' not in tokens:
                    continue
                values = []
                for tok in tokens[tokens.index('--cfg-options') + 1:]:
                    if tok.startswith('-'):
                        break
                    values.append(tok)
                values = [v for v in values
                          if v.startswith('model.backbone.token_reduction')]
                if values:
                    cfgs = [t for t in tokens if CONFIG_PATH.fullmatch(t)]
                    out.append((where, cfgs[-1] if cfgs else
                                config_before(offset), cfg_options(values),
                                ' '.join(values)))
            # inline `model.backbone.token_reduction.x=v` (a cfg option)
            if kind == 'inline' and re.fullmatch(
                    r'model\.backbone\.token_reduction[\w.]*=\S+', code):
                out.append((where, config_before(offset), cfg_options([code]),
                            code))
            # token_reduction=dict(...) in code
            if kind != 'block':
                continue
            for m in re.finditer(r'(?<![\w.])token_reduction=dict\(', code):
                source = balanced_call(code, m.end() - len('dict('))
                if '...' in source:
                    continue  # a placeholder, not a setting
                assert name in SNIPPET_MODELS, \
                    f'{where} writes a token_reduction the test cannot ' \
                    f'build: add the page to SNIPPET_MODELS'
                setting = eval(source, {'dict': dict})  # noqa: S307
                out.append((where, SNIPPET_MODELS[name],
                            {'model.backbone.token_reduction': setting},
                            source))
    return out


def test_settings_written_in_the_docs_build_on_their_model():
    settings = written_settings()
    checked = {where.split(':')[0] for where, *_ in settings}
    # What the pages write today; a page that stops writing them (or a
    # parser that stops finding them) fails here.
    assert {'methods.md', 'proxy.md', 'data.md'} <= checked, checked
    failures = []
    for where, cfg_path, options, what in settings:
        if cfg_path is None:
            failures.append(f'{where}: `{what}` names no config before it')
            continue
        cfg = config(cfg_path, options)
        reason = builds(cfg, cfg.model.backbone.get('token_reduction'))
        if reason:
            failures.append(f'{where}: `{what}` on {cfg_path}: {reason}')
    assert not failures, '\n'.join(failures)


def outputs() -> Set[str]:
    """Files the pages' commands write (``--out PATH``)."""
    return {m.group(1) for page in pages()
            for m in re.finditer(r'--out\s+(\S+)', page.read_text())}


def test_files_named_in_the_docs_exist():
    written = outputs()
    configs = list((ROOT / 'configs').rglob('*.py'))
    failures = []
    path_re = re.compile(r'(?<![\w./-])(?:\.\./)?((?:configs|tools|tests|'
                         r'mmtokred)/[\w./*-]+\.(?:py|sh))')
    # config names without the configs/ prefix: videomae_x.py,
    # videomae_vit-large/videomae_x.py, tsn_timm_x.py
    name_re = re.compile(r'(?<![\w./$-])((?:[\w-]+/)?(?:videomae|tsn_timm)'
                         r'[\w-]*\.py)')
    for page in pages():
        text = page.read_text()
        for m in path_re.finditer(text):
            path = m.group(1)
            if path in written:
                continue
            if not list(ROOT.glob(path)):
                failures.append(f'{page.name}:{line_of(text, m.start())}: '
                                f'{path} does not exist')
        for m in name_re.finditer(text):
            path = m.group(1)
            if path.startswith('configs/'):
                continue  # a path, checked above
            if '/' in path:
                ok = (ROOT / 'configs' / path).exists()
            else:
                ok = any(c.name == path for c in configs)
            if not ok and f'configs/{path}' not in written:
                failures.append(f'{page.name}:{line_of(text, m.start())}: '
                                f'no config {path} under configs/')
    assert not failures, '\n'.join(failures)


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


def test_checkpoint_globs_in_the_loops_expand_to_one_file(tmp_path):
    """The pages' commands that take ``best_acc_top1_epoch_*.pth`` run in a
    shell with stub commands, in a tree where each training kept one best
    epoch and the checkpoints the pages' trainings write: every .pth
    argument (or ``key=`` value) must be that one existing file."""
    written = ('proxy_pretrain_seed{}/epoch_20.pth',
               'proxy_finetune_seed{}/epoch_8.pth',
               'proxy_tome_ft_seed{}/epoch_3.pth',
               'proxy_ppt_ft_seed{}/epoch_3.pth')
    for seed, epoch in ((0, 12), (1, 9)):
        for run in ('proxy_seed{}', 'proxy_scratch_seed{}'):
            folder = tmp_path / 'work_dirs' / run.format(seed)
            folder.mkdir(parents=True)
            (folder / f'best_acc_top1_epoch_{epoch}.pth').touch()
        for path in written:
            path = tmp_path / 'work_dirs' / path.format(seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    stubs = ('check() { for a in "$@"; do case "$a" in *.pth) a="${a##*=}"; '
             'if [ -f "$a" ]; then echo "OK $a"; else echo "MISSING $a"; fi;; '
             'esac; done; }\n'
             'python() { check "$@"; }\npython3() { check "$@"; }\n'
             'bash() { check "$@"; }\n'
             'command_not_found_handle() { return 0; }\n')
    blocks = [(page.name, code) for page in pages()
              for _, code in code_blocks(page.read_text())
              if 'best_acc_top1' in code]
    assert {name for name, _ in blocks} >= {'calibration.md', 'proxy.md'}
    for name, code in blocks:
        result = subprocess.run(['/bin/bash', '-c', stubs + code],
                                cwd=tmp_path, env={'PATH': ''},
                                capture_output=True, text=True, timeout=60)
        lines = result.stdout.split('\n')
        missing = [line for line in lines if line.startswith('MISSING')]
        assert not missing, f'{name}: {missing} in\n{code}'
        assert any(line.startswith('OK') for line in lines), (name, result)


# ------------------------------------------------------------ (c) the flags

HELP = r'''
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [path, '--help']
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name='__main__')
    except SystemExit:
        pass
    print('\n=== ' + path + '\n' + out.getvalue())
'''


def static_options(tool: str) -> Tuple[Set[str], bool]:
    """The option strings of the ``add_argument`` calls of ``tools/tool``,
    and --help; and whether some option's name is computed (an f-string:
    not read here)."""
    tree = ast.parse((ROOT / 'tools' / tool).read_text())
    found, computed = {'-h', '--help'}, False
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == 'add_argument'):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(
                        arg.value, str) and arg.value.startswith('-'):
                    found.add(arg.value)
                elif not isinstance(arg, ast.Constant):
                    computed = True
    return found, computed


def help_options(text: str) -> Set[str]:
    """Option strings of the options lines of an argparse --help."""
    found = set()
    for line in text.splitlines():
        m = re.match(r'^  (-\S.*?)(?:\s{2,}|$)', line)
        if m:
            found |= set(re.findall(r'(?:^|, )(--?[A-Za-z][\w-]*)', m[1]))
    return found


@pytest.fixture(scope='module')
def tool_options() -> Dict[str, Set[str]]:
    """tools/X.py -> its options: from --help (all in one process), or for
    the tools that import timm, from their argparse calls."""
    tools = sorted(p.name for p in (ROOT / 'tools').glob('*.py'))
    helped = [t for t in tools if t not in TIMM_TOOLS]
    out = run_tool([sys.executable, '-c', HELP,
                    *[f'tools/{t}' for t in helped]]).stdout
    options = {}
    for chunk in out.split('\n=== tools/')[1:]:
        tool, _, text = chunk.partition('\n')
        options[tool] = help_options(text)
        assert '--help' in options[tool], f'tools/{tool} --help:\n{text}'
    assert sorted(options) == helped
    for tool in TIMM_TOOLS:
        options[tool], computed = static_options(tool)
        assert not computed, f'tools/{tool}: an option name is computed'
    return options


def test_static_options_are_the_help_options(tool_options):
    """The argparse calls read for the timm tools give what --help gives,
    on every tool that runs here (but options whose name is computed)."""
    for tool, options in tool_options.items():
        static, computed = static_options(tool)
        if computed:
            assert static <= options, tool
        else:
            assert static == options, tool


def flag_uses() -> List[Tuple[str, Optional[str], str, str]]:
    """``(where, tools, flag, how)`` of every flag the pages give a tool:
    after ``tools/X`` in a command (code blocks and inline code: the flag is
    that tool's), or in inline code of its own in the prose (``--clips``: a
    flag of one of the tools the page names; ``tools`` then lists them,
    joined by ' or ')."""
    uses = []
    for page in pages():
        text = page.read_text()
        page_tools = ' or '.join(sorted(set(TOOL.findall(text)))) or None
        for offset, kind, code in code_spans(text):
            where = f'{page.name}:{line_of(text, offset)}'
            if TOOL.search(code):
                for cmd in commands(code):
                    tool = None
                    for tok in cmd.split():
                        m = TOOL.search(tok)
                        if m:
                            tool = m.group(1)
                            continue
                        flag = FLAG.match(tok)
                        if tool and flag:
                            uses.append((where, tool, flag[1].split('=')[0],
                                         cmd.strip()))
            elif kind == 'inline' and code.startswith('-'):
                if code in FOREIGN_FLAGS:
                    continue
                for tok in code.split():
                    flag = FLAG.match(tok)
                    if flag:
                        uses.append((where, page_tools,
                                     flag[1].split('=')[0], code))
    return uses


def options_of(tool: str, tool_options: Dict[str, Set[str]]) -> Set[str]:
    """The flags ``tools/tool`` takes: wrappers pass theirs to a Python
    tool; torchrun.sh to the tools it launches (those with --launcher);
    demo.sh takes none."""
    tool = WRAPPERS.get(tool, tool)
    if tool == 'torchrun.sh':
        return set().union(*(o for o in tool_options.values()
                             if '--launcher' in o))
    if tool.endswith('.sh'):
        assert (ROOT / 'tools' / tool).exists(), tool
        return set()
    return tool_options.get(tool, set())


def test_flags_in_the_docs_are_flags_of_their_tool(tool_options):
    uses = flag_uses()
    assert len(uses) > 50, len(uses)  # the parser still finds them
    failures = []
    for where, tools, flag, how in uses:
        if tools is None:
            failures.append(f'{where}: `{how}`: no tool named on the page')
            continue
        names = tools.split(' or ')
        missing = [t for t in names if not (ROOT / 'tools' / t).exists()]
        if missing:
            failures.append(f'{where}: tools/{missing[0]} does not exist')
        elif not any(flag in options_of(t, tool_options) for t in names):
            failures.append(f'{where}: {flag} is not an option of '
                            f'{tools} (`{how}`)')
    assert not failures, '\n'.join(failures)
    for span in FOREIGN_FLAGS:  # the exception is still needed
        assert any(span in p.read_text() for p in pages()), span


# ---------------------------------------------------------- (d) the figures

FIGURE = re.compile(r'(?<![\w.])[-+]?\d+(?:\.\d+)?(?:x|%| MiB)?(?![\w.])')
PROSE_FIGURE = re.compile(
    r'(?<![\w.])[-+]?\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?(?:x|%)(?!\w)'
    r'|(?<![\w.])[-+]?\d+\.\d+(?![\w.])')


def has_figure(text: str, figure: str) -> bool:
    """``figure`` (a number, maybe with x, % or MiB) stands in ``text``."""
    return re.search(rf'(?<![\d.]){re.escape(figure)}(?![\d])', text) \
        is not None


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


def results_key(cell: str) -> str:
    m = re.search(r'`(?:configs/)?([\w.-]+\.py)`', cell)
    return m.group(1) if m else ('stock' if 'stock' in cell else cell)


def test_readme_results_table_is_in_benchmark_md():
    results = section((ROOT / 'README.md').read_text(), 'Results')
    assert '](docs/benchmark.md)' in results
    (table, ) = tables(results)
    bench = section((ROOT / 'docs' / 'benchmark.md').read_text(),
                    'Results (ViT-B and the other models, CPU, fp32)')
    bench_rows = {results_key(r[0]): r for r in tables(bench)[0][1:]}
    failures = []
    for row in table[1:]:
        key = results_key(row[0])
        if key not in bench_rows:
            failures.append(f'README Results: {key} has no row in '
                            'docs/benchmark.md')
            continue
        theirs = ' | '.join(bench_rows[key])
        for cell in row[1:]:
            for figure in FIGURE.findall(cell):
                if not has_figure(theirs, figure):
                    failures.append(f'README Results, {key}: {figure} '
                                    f'({cell!r}) is not in docs/benchmark.md '
                                    f'row {theirs!r}')
    assert len(table) > 5 and not failures, '\n'.join(failures)


def proxy_changes() -> Dict[Tuple[str, str], str]:
    """(method, target) -> "seed 0 / seed 1" top-1 change, from the first
    table of docs/proxy_results.md (proportional attention off, as the
    ViT-B configs)."""
    table = tables((ROOT / 'docs' / 'proxy_results.md').read_text())[0]
    header = table[0]
    method, target, change = (header.index(c)
                              for c in ('method', 'target', 'change'))
    return {(r[method], r[target]): r[change] for r in table[1:]}


@pytest.mark.parametrize('page, title', [
    ('README.md', 'Results'),
    ('docs/benchmark.md', 'Results (ViT-B and the other models, CPU, fp32)'),
])
def test_proxy_figures_are_the_proxy_results(page, title):
    changes = proxy_changes()
    (table, *_) = tables(section((ROOT / page).read_text(), title))
    found, failures = 0, []
    for row in table[1:]:
        m = re.search(r'proxy.*?([-+]\d+\.\d / [-+]\d+\.\d)', row[-1])
        if not m:
            continue
        found += 1
        key = results_key(row[0])
        if key not in PROXY_POINTS:
            failures.append(f'{page}: {key} gives proxy {m[1]}: add the '
                            'point it is to PROXY_POINTS')
            continue
        point = PROXY_POINTS[key]
        if changes.get(point) != m[1]:
            failures.append(f'{page}: {key}: proxy {m[1]}, but '
                            f'docs/proxy_results.md {point}: '
                            f'{changes.get(point)}')
    assert found >= 5 and not failures, '\n'.join(failures)


def readme_citing_paragraphs() -> List[Tuple[str, str, List[str]]]:
    """``(id, paragraph, cited pages)`` of README's prose paragraphs that
    link a page of docs/."""
    out = []
    for _, para in paragraphs((ROOT / 'README.md').read_text()):
        if para.lstrip().startswith('|'):
            continue
        cited = sorted(set(re.findall(r'\]\((docs/\w+\.md)', para)))
        if cited:
            words = re.findall(r'\w+', INLINE.sub(
                lambda m: m.group(1), para))[:5]
            out.append(('_'.join(words), para, cited))
    return out


@pytest.mark.parametrize('para, cited', [
    pytest.param(para, cited, id=id_)
    for id_, para, cited in readme_citing_paragraphs()])
def test_readme_prose_figures_are_in_the_cited_pages(para, cited):
    values = set().union(*(figure_values((ROOT / c).read_text())
                           for c in cited))
    missing = [f for f in PROSE_FIGURE.findall(para)
               if not prose_figure_found(f, values)]
    assert not missing, f'{missing} not in {cited}:\n{para}'
