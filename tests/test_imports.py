"""The shape of the code: mmtokred's modules import one another without a
circle, and no module of mmtokred/ or tools/ grows past 350 lines."""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'mmtokred'
MAX_LINES = 350


def module_name(path: Path) -> str:
    """``mmtokred/a/b.py`` -> ``mmtokred.a.b``; a package's
    ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def imported(tree: ast.AST, name: str, is_package: bool,
             modules: Set[str]) -> Set[str]:
    """The modules of ``modules`` that module ``name``'s ``tree`` imports
    anywhere (at the top or inside a function), ``from package import
    module`` counting as the module."""
    package = name if is_package else name.rpartition('.')[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            targets = [f'{base}.{alias.name}' for alias in node.names]
            targets.append(base)
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition('.')[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Each module of mmtokred and the modules of mmtokred it imports."""
    paths = {module_name(path): path for path in PACKAGE.rglob('*.py')}
    modules = set(paths)
    return {name: imported(ast.parse(path.read_text()), name,
                           path.name == '__init__.py', modules)
            for name, path in paths.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One circle of imports in ``graph`` (its modules in order, the first
    again at the end), or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == \
        ['a', 'b', 'c', 'a']


def test_relative_imports_resolve_to_modules():
    tree = ast.parse('from .forward import prepare\n'
                     'from .. import table\n'
                     'from ..ops.linear import MACHINE\n')
    modules = {'mmtokred', 'mmtokred.table', 'mmtokred.ops',
               'mmtokred.ops.linear', 'mmtokred.measure',
               'mmtokred.measure.forward', 'mmtokred.measure.peak'}
    assert imported(tree, 'mmtokred.measure.peak', False, modules) == {
        'mmtokred', 'mmtokred.table', 'mmtokred.ops.linear',
        'mmtokred.measure.forward'}


def test_no_import_circle_in_mmtokred():
    graph = import_graph()
    # A package's __init__ that imports its submodules is no circle of the
    # code: a submodule naming its package only reaches the submodules
    # loaded already. Leave out the edges from a module to its packages.
    for name, targets in graph.items():
        graph[name] = {target for target in targets
                       if not name.startswith(target + '.')}
    cycle = find_cycle(graph)
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)


def test_modules_stay_short():
    paths = sorted([*PACKAGE.rglob('*.py'), *(ROOT / 'tools').glob('*.py')])
    long = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
            for path in paths}
    long = {path: lines for path, lines in long.items()
            if lines > MAX_LINES}
    assert not long, f'modules over {MAX_LINES} lines: {long}'
