"""The pages' commands. Every flag the pages give a tool is a flag of
that tool: after ``tools/X`` in a command, or in inline code of its own in
the prose (a flag of one of the tools the page names). A tool's flags come
from its --help (all tools in one process); those of the tools that import
timm, which the main environment lacks, from their argparse calls, read as
the other tools' --help confirms. The checkpoints the pages' loops pass
are one file each."""
import ast
import re
import subprocess
import sys
from typing import Dict, List, Optional, Set, Tuple

import pytest

from conftest import ROOT, run_tool
from test_docs import code_blocks, code_spans, commands, line_of, pages

TIMM_TOOLS = ('eval_timm.py', 'benchmark_timm.py')
#: Wrappers that pass their arguments on to a Python tool.
WRAPPERS = {'dist_test.sh': 'test.py', 'dist_train.sh': 'train.py'}
#: Inline code with flags of other projects' command lines, quoted as such.
FOREIGN_FLAGS = {
    '--r_tokens 50 --pp_loc_list 3 6 9 --threshold 7e-5':
    "the official PPT code's command line (xjwu1024/PPT README)",
}
TOOL = re.compile(r'(?<![\w./-])tools/([\w-]+\.(?:py|sh))')
FLAG = re.compile(r'^\[?(--?[A-Za-z][\w-]*)')


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
