"""README.md and docs/ against what they describe: README is short and
its commands are those CI runs; every config, file and link the pages name
exists; every token reduction they write builds on the model they name.

Flags of the tools: tests/test_docs_flags.py; figures against their CSVs:
tests/test_docs_results.py; calibrate commands as written:
tests/test_docs_calibration.py.
"""
import argparse
import configparser
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction

from conftest import ROOT
from mmaction.registry import MODELS

VIT_B = 'configs/videomae_dense.py'
README_LINES = 150

FENCE = re.compile(r'^```[^\n]*\n(.*?)^```[ \t]*$', re.S | re.M)
INLINE = re.compile(r'`([^`\n]+)`')
CONFIG_PATH = re.compile(r'(?<![\w./-])(configs/[\w./-]+\.py)')
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def pages() -> List[Path]:
    return [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


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


def commands(code: str) -> Iterator[str]:
    """Shell commands of ``code``: continuations joined, comments dropped,
    split at newlines, ``;`` and ``&&``."""
    code = re.sub(r'\\\n', ' ', code)
    for line in code.split('\n'):
        line = re.sub(r'(^|\s)#.*', '', line)
        yield from re.split(r'&&|;', line)


def section(text: str, title: str) -> str:
    m = re.search(rf'^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)', text,
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


def line_of(text: str, offset: int) -> int:
    return text.count('\n', 0, offset) + 1


# ------------------------------------------------------------------ README

def ci_steps() -> List[str]:
    """The commands .ci/run runs, its pytest tiers written out, without
    what handles their exit status and output (``||``, ``2>&1 | tee``)."""
    text = (ROOT / '.ci' / 'run').read_text()
    text = re.sub(r'^tier \w+ ', 'python -m pytest -q ', text, flags=re.M)
    return [' '.join(re.split(r' (?:\|\|?|2>&1) ', c)[0].split())
            for c in commands(text) if c.strip()]


def readme_commands(title: str) -> List[List[str]]:
    """The steps of each fenced command of README's section ``title``."""
    text = section((ROOT / 'README.md').read_text(), title)
    return [[' '.join(c.split()) for c in commands(code) if c.strip()]
            for _, code in code_blocks(text)]


def test_readme_is_read_in_a_minute():
    text = (ROOT / 'README.md').read_text()
    assert len(text.splitlines()) <= README_LINES
    titles = re.findall(r'^## (.+)$', text, re.M)
    assert titles[:4] == ['Quick start (fresh machine, CPU is enough, no '
                          'download)', 'Tests', 'Results', 'Usage'], titles


def test_readme_test_commands_are_those_ci_runs():
    """Every step of README's test commands but making and entering a
    virtual environment is a step of .ci/run (which makes its own)."""
    ci = ci_steps()
    blocks = readme_commands('Tests')
    assert len(blocks) == 2  # the main environment, the timm one
    for steps in blocks:
        run = [s for s in steps if not re.match(r'(python3 -m venv|\. )', s)]
        assert any('pytest' in s for s in run), steps
        missing = [s for s in run if s not in ci]
        assert not missing, f'README runs {missing}; .ci/run does not'


def test_readme_installs_name_extras_that_exist():
    parser = configparser.ConfigParser()
    parser.read(ROOT / 'setup.cfg')
    extras = set(parser['options.extras_require'])
    (quick_start, ) = readme_commands('Quick start')
    installs = [s for steps in [quick_start, *readme_commands('Tests')]
                for s in steps if 'pip install -e' in s]
    assert len(installs) == 3, installs
    for step in installs:
        (named, ) = re.findall(r'\.\[([\w,]+)\]', step)
        assert set(named.split(',')) <= extras, step
    assert 'bash tools/demo.sh' in quick_start
    assert (ROOT / 'tools' / 'demo.sh').exists()


def test_readme_usage_config_builds(tmp_path):
    """The config README's Usage writes, as a file: its backbone builds
    with that token reduction."""
    usage = section((ROOT / 'README.md').read_text(), 'Usage')
    (python, ) = [c for c in re.findall(r'```python\n(.*?)```', usage, re.S)]
    (tmp_path / 'mine.py').write_text(python)
    backbone = Config.fromfile(str(tmp_path / 'mine.py')).model.backbone
    model = MODELS.build(backbone.to_dict())
    assert model.token_reduction.input is not None


# ------------------------------------------------------- files and links

def outputs() -> set:
    """Files the pages' commands write (``--out PATH``)."""
    return {m.group(1) for page in pages()
            for m in re.finditer(r'--out\s+(\S+)', page.read_text())}


def test_files_and_links_in_the_docs_exist():
    written = outputs()
    configs = list((ROOT / 'configs').rglob('*.py'))
    path_re = re.compile(r'(?<![\w./-])(?:\.\./)?((?:configs|tools|tests|'
                         r'mmtokred)/[\w./*-]+\.(?:py|sh))')
    # config names without the configs/ prefix: videomae_x.py,
    # videomae_vit-large/videomae_x.py, tsn_timm_x.py
    name_re = re.compile(r'(?<![\w./$-])((?:[\w-]+/)?(?:videomae|tsn_timm)'
                         r'[\w-]*\.py)')
    failures = []
    for page in pages():
        text = page.read_text()
        for m in path_re.finditer(text):
            if m.group(1) not in written and not list(ROOT.glob(m.group(1))):
                failures.append(f'{page.name}:{line_of(text, m.start())}: '
                                f'{m.group(1)} does not exist')
        for m in name_re.finditer(text):
            path = m.group(1)
            if path.startswith('configs/') or f'configs/{path}' in written:
                continue
            ok = (ROOT / 'configs' / path).exists() if '/' in path else \
                any(c.name == path for c in configs)
            if not ok:
                failures.append(f'{page.name}:{line_of(text, m.start())}: '
                                f'no config {path} under configs/')
        for m in LINK.finditer(prose(text)):
            target = m.group(1)
            if not target.startswith('http') and \
                    not (page.parent / target).exists():
                failures.append(f'{page.name}:{line_of(text, m.start())}: '
                                f'link to {target}, which does not exist')
    assert not failures, '\n'.join(failures)


# -------------------------------------------------------------- settings

_BACKBONES: Dict[str, torch.nn.Module] = {}


def builds(cfg: Config) -> Optional[str]:
    """None if ``cfg``'s token reduction builds on its backbone (random
    weights, built once per architecture), else why not."""
    backbone = cfg.model.backbone.to_dict()
    reduction = backbone.pop('token_reduction', None)
    key = repr(sorted(backbone.items()))
    if key not in _BACKBONES:
        _BACKBONES[key] = MODELS.build(dict(backbone, token_reduction=None))
    try:
        _BACKBONES[key].set_token_reduction(reduction)
    except (ValueError, TypeError, KeyError) as exc:
        return f'{type(exc).__name__}: {exc}'
    return None


def cfg_options(tokens: List[str]) -> Dict:
    """``--cfg-options`` values as tools/test.py parses them."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *tokens]).cfg_options


def written_settings() -> List[Tuple[str, str, Dict]]:
    """``(where, config, options)``: the token reductions the pages write
    as ``--cfg-options model.backbone.token_reduction...`` (on the config
    of that command, else the last named before it) and as
    ``token_reduction=dict(...)`` in methods.md's code (on ViT-B)."""
    out = []
    for page in pages():
        text = page.read_text()
        named = [(m.start(), m.group(1)) for m in CONFIG_PATH.finditer(text)]
        for offset, kind, code in code_spans(text):
            where = f'{page.name}:{line_of(text, offset)}'
            before = [c for o, c in named if o < offset]
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
                configs = [t for t in tokens if CONFIG_PATH.fullmatch(t)]
                if values:
                    out.append((where, (configs or before or [None])[-1],
                                cfg_options(values)))
            if kind == 'inline' and re.fullmatch(
                    r'model\.backbone\.token_reduction[\w.]*=\S+', code):
                out.append((where, (before or [None])[-1],
                            cfg_options([code])))
            if kind == 'block' and page.name == 'methods.md':
                for m in re.finditer(r'(?<![\w.])token_reduction=(dict\(.*?'
                                     r'\)\))(?=,?\s*$)', code, re.S | re.M):
                    if '...' not in m.group(1):
                        setting = eval(m.group(1), {'dict': dict})  # noqa
                        out.append((where, VIT_B, {
                            'model.backbone.token_reduction': setting}))
    return out


def test_settings_written_in_the_docs_build_on_their_model():
    settings = written_settings()
    pages_with = {where.split(':')[0] for where, *_ in settings}
    assert {'methods.md', 'proxy.md', 'data.md'} <= pages_with, pages_with
    failures = []
    for where, path, options in settings:
        if path is None:
            failures.append(f'{where}: {options} names no config before it')
            continue
        cfg = Config.fromfile(str(ROOT / path))
        cfg.merge_from_dict(options)
        reason = builds(cfg)
        if reason:
            failures.append(f'{where}: {options} on {path}: {reason}')
    assert not failures, '\n'.join(failures)


def test_every_video_config_named_in_the_docs_builds():
    """Each config the pages name with mmtokred's video backbone builds
    with its token reduction (the timm ones: tests/test_timm_*.py)."""
    named = {m.group(1) for page in pages()
             for m in CONFIG_PATH.finditer(page.read_text())
             if (ROOT / m.group(1)).exists()}
    configs = [(path, Config.fromfile(str(ROOT / path)))
               for path in sorted(named)]
    video = [(path, cfg) for path, cfg in configs
             if cfg.get('model', {}).get('backbone', {}).get('type')
             == 'TokenReductionVisionTransformer']
    assert len(video) > 10, [path for path, _ in video]
    failures = [f'{path}: {reason}' for path, cfg in video
                if (reason := builds(cfg))]
    assert not failures, '\n'.join(failures)
