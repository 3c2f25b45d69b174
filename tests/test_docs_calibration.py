"""Every `tools/calibrate.py` command of README.md and docs/ runs as
written, on the demo data: the config it names (configs/videomae_*.py on
the demo model of the same kind: both have a test loader only), every flag
as written but ``--clips`` (3) and ``--out``, the loops' first values, the
checkpoint seeded weights of the config's model."""
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import ROOT, data_options, run_tool, split_options
from mmengine.config import Config

from test_docs import code_blocks, commands, pages

#: The demo model that stands in for each ViT-B config (same input stage).
DEMO = {'configs/videomae_nepam.py': 'configs/demo/videomae_tiny_nepam.py'}
DEMO_DENSE = 'configs/demo/videomae_tiny_dense.py'
LOOP = re.compile(r'for (\w+) in ([^;]+);')


def documented() -> List[Tuple[str, str]]:
    """``(page, command)`` of each runnable calibrate command, the loop
    variables set to their first values (placeholders and the launcher's
    ``...`` left out)."""
    found = []
    for page in pages():
        for _, code in code_blocks(page.read_text()):
            first = {name: values.split()[0]
                     for name, values in LOOP.findall(code)}
            for command in commands(code):
                if 'tools/calibrate.py' not in command or '...' in command \
                        or 'CONFIG' in command:
                    continue
                for name, value in first.items():
                    command = re.sub(rf'\$\{{?{name}\}}?', value, command)
                found.append((page.name, ' '.join(command.split())))
    return found


def on_the_demo(command: str) -> Tuple[str, List[str]]:
    """The config the command runs on here, and its other arguments but
    the checkpoint, ``--clips`` and ``--out``."""
    words = shlex.split(command)
    start = words.index('tools/calibrate.py')
    config, rest = words[start + 1], words[start + 3:]
    if config.startswith('configs/videomae_'):
        config = DEMO.get(config, DEMO_DENSE)
    kept, skip = [], False
    for word in rest:
        if skip:
            skip = False
        elif word in ('--clips', '--out'):
            skip = True
        else:
            kept.append(word)
    return config, kept


def runs() -> Dict[Tuple[str, ...], str]:
    """Each distinct run and the page that documents it first."""
    distinct = {}
    for page, command in documented():
        config, rest = on_the_demo(command)
        distinct.setdefault((config, *rest), f'{page}: {command}')
    return distinct


RUNS = runs()


def test_the_pages_document_calibrate_commands():
    pages_with = {page for page, _ in documented()}
    assert {'usage.md', 'calibration.md', 'packed.md'} <= pages_with
    assert len(RUNS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize('run', list(RUNS), ids=list(RUNS.values()))
def test_documented_calibration_runs_as_written(run, small_actions,
                                                video_data, tiny_checkpoint,
                                                proxy_checkpoint, tmp_path):
    config, *rest = run
    demo = config.startswith('configs/demo/')  # both demo models: one shape
    checkpoint = tiny_checkpoint if demo else proxy_checkpoint
    data = data_options(video_data) if demo else split_options(small_actions)
    out = tmp_path / 'calibrated.py'
    result = run_tool([sys.executable, 'tools/calibrate.py', config,
                       checkpoint, *rest, '--clips', '3', '--out',
                       str(out), '--cfg-options', *data],
                      check=False)
    assert result.returncode == 0, (
        f'{RUNS[run]}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}')
    assert f'wrote {out}' in result.stdout
    base = Config.fromfile(str(ROOT / config)).model
    written = Config.fromfile(str(out)).model
    written.backbone.pop('token_reduction')
    base.backbone.pop('token_reduction', None)
    assert written == base  # only the token reduction changed
    assert Path(out).read_text().startswith('# Calibrated by')
