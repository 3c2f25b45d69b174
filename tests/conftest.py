import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmaction.utils import register_all_modules
from mmtokred.data import write_action_dataset, write_video_dataset

register_all_modules()  # mmaction as the default scope, as configs set it

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / 'configs' / 'demo' / 'videomae_tiny_dense.py'

#: A small backbone (token grid 4 x 4 x 4) for the tests that run every
#: method: tests/test_backbone_fast_path.py, test_backbone_device_placement.py
#: and test_backbone_cuda.py.
SMALL_BACKBONE = dict(type='TokenReductionVisionTransformer', img_size=64,
                      patch_size=16, embed_dims=48, depth=4, num_heads=4,
                      num_frames=8)
#: Every method with a fixed budget on it: one token count per clip shape,
#: so one graph under torch.compile and no host sync.
FIXED_BUDGETS = {
    'nepam_ratio': dict(input=dict(type='NEPAM', ratio=0.5)),
    'nepam_num_windows': dict(input=dict(type='NEPAM', window=(2, 2, 2),
                                         num_windows=3), track_source=True),
    'tome': dict(blocks=dict(type='ToMe', r=6)),
    'tome_protected': dict(blocks=dict(type='ToMe', r=6, protected=1)),
    'nepam_tome_proportional': dict(
        input=dict(type='NEPAM', ratio=0.3), blocks=dict(type='ToMe', r=4),
        proportional_attention=True),
    'ppt': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(10, 8))),
    'ppt_paper_rule': dict(blocks=dict(type='PPT', blocks=(1, 2), r=10,
                                       rule='paper', threshold=7e-5)),
    'jmp': dict(blocks=dict(type='JMP', blocks=(1, 2), r=(10, 8))),
    **{f'token_pruning_{importance}': dict(blocks=dict(
        type='TokenPruning', blocks=(1, 2), r=10, importance=importance))
       for importance in ('random', 'received', 'pooled_query', 'norm',
                          'sharpness')},
    'token_pruning_fuse': dict(blocks=dict(type='TokenPruning', blocks=(1, ),
                                           r=10, keep_mean='fuse')),
    'similarity_pruning': dict(blocks=dict(type='SimilarityPruning',
                                           blocks=(1, 2), r=10)),
    'patch_similarity': dict(input=dict(type='PatchSimilarityPruning',
                                        ratio=0.4)),
    'nepam_jmp_tracked': dict(input=dict(type='NEPAM', ratio=0.5),
                              blocks=dict(type='JMP', blocks=(1, ), r=10),
                              track_source=True),
}
#: NEPAM's threshold mode: as many tokens as the content allows.
THRESHOLD = dict(input=dict(type='NEPAM', ratio=None, threshold=0.5))


def build_small(token_reduction: Optional[Dict]) -> torch.nn.Module:
    """:data:`SMALL_BACKBONE` with ``token_reduction``, seeded, in eval
    mode."""
    from mmaction.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(SMALL_BACKBONE,
                             token_reduction=token_reduction)).eval()


def _timm_unavailable() -> Optional[str]:
    """Why `import timm` fails here (None when it works).

    Any exception counts, not only ImportError: a torchvision that does not
    match torch fails with RuntimeError or AttributeError inside `import timm`.
    """
    try:
        import timm  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f'{type(exc).__name__}: {exc}'.splitlines()[0]
    return None


# The tests of mmtokred.timm (tests/test_timm_*.py) need timm and torchvision
# (README, Tests: a second environment). Without them they are left out, said
# once in the summary; MMTOKRED_REQUIRE_TIMM=1 makes that an error instead.
TIMM_UNAVAILABLE = _timm_unavailable()
TIMM_TEST_GLOB = 'test_timm_*.py'
TIMM_SKIPPED = ('timm tests skipped: timm cannot be imported ({}); '
                'see README, Tests')
_timm_files_left_out: Set[str] = set()


def pytest_configure(config):
    if TIMM_UNAVAILABLE and os.environ.get('MMTOKRED_REQUIRE_TIMM') == '1':
        pytest.exit('MMTOKRED_REQUIRE_TIMM=1 but timm cannot be imported '
                    f'({TIMM_UNAVAILABLE}); see README, Tests', returncode=1)


class _LeftOut(pytest.File):
    """A test file collected as no test (without importing it)."""

    def collect(self):
        # Recorded here: pytest makes a node for every file of a directory,
        # also of files not asked for, but collects only those asked for.
        _timm_files_left_out.add(self.path.name)
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    # Unlike pytest_ignore_collect, also reached for files named on the
    # command line.
    if TIMM_UNAVAILABLE and fnmatch.fnmatch(module_path.name, TIMM_TEST_GLOB):
        return _LeftOut.from_parent(parent, path=module_path)
    return None


def pytest_terminal_summary(terminalreporter):
    if _timm_files_left_out:
        terminalreporter.write_line(TIMM_SKIPPED.format(TIMM_UNAVAILABLE))


def _on_host(t: object) -> bool:
    # 0-dim CPU tensors are Python scalars torch wrapped: CUDA takes them.
    return isinstance(t, Tensor) and t.device.type == 'cpu' and t.dim() > 0


class OneDevice(TorchDispatchMode):
    """Fails any operation whose tensor arguments are on several devices,
    and any copy of a host tensor to another device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_leaves((args, kwargs))
                   if isinstance(t, Tensor) and (t.dim() or
                                                 t.device.type != 'cpu')}
        if len(devices) > 1:
            raise AssertionError(
                f'{func} mixes devices {sorted(map(str, devices))}')
        target = kwargs.get('device')
        if func is torch.ops.aten._to_copy.default and _on_host(args[0]) \
                and target is not None and torch.device(target).type != 'cpu':
            raise AssertionError(f'{func} copies a host tensor to {target}')
        return func(*args, **kwargs)


def load_tool(name: str) -> types.ModuleType:
    """``tools/NAME.py`` imported as a module (its functions, in-process)."""
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(args: List[str], check: bool = True,
             env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    """Run a command from the repository root with mmtokred importable."""
    full_env = {**os.environ, **(env or {})}
    full_env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(ROOT), full_env.get('PYTHONPATH')]))
    bin_dir = os.path.dirname(sys.executable)
    full_env['PATH'] = bin_dir + os.pathsep + full_env.get('PATH', '')
    result = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f'{args} failed ({result.returncode}):\n'
            f'{result.stdout[-3000:]}\n{result.stderr[-6000:]}')
    return result


def test_metrics(output: str) -> Dict[str, float]:
    """The metrics of the `Epoch(test)` line of a test run's log."""
    lines = [line for line in output.splitlines() if 'Epoch(test)' in line]
    assert lines, 'no Epoch(test) line in the output:\n' + output[-3000:]
    return {
        key: float(value)
        for key, value in re.findall(r'(acc/\w+): ([\d.]+)', lines[-1])
    }


test_metrics.__test__ = False  # a helper, not a test


@pytest.fixture(scope='session')
def video_data(tmp_path_factory) -> Dict[str, str]:
    """Five generated clips (an odd count: distributed testing pads)."""
    root = tmp_path_factory.mktemp('videos')
    video_dir, ann_file = write_video_dataset(str(root), num_videos=5)
    return dict(videos=str(video_dir), ann_file=str(ann_file))


def data_options(video_data: Dict[str, str]) -> List[str]:
    return [
        f"test_dataloader.dataset.ann_file={video_data['ann_file']}",
        f"test_dataloader.dataset.data_prefix.video={video_data['videos']}",
    ]


def split_options(paths, splits=('train', 'val', 'test'),
                  batch: int = 4) -> List[str]:
    """``--cfg-options`` pointing a proxy config's ``splits`` at the clips of
    ``write_action_dataset`` (its returned ``paths``), loaded in-process
    in batches of ``batch``."""
    options = []
    for split in splits:
        options += [
            f'{split}_dataloader.dataset.ann_file={paths[split]}',
            f"{split}_dataloader.dataset.data_prefix.video={paths['videos']}",
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
            f'{split}_dataloader.batch_size={batch}',
        ]
    return options


@pytest.fixture(scope='session')
def small_actions(tmp_path_factory) -> Dict[str, str]:
    """The proxy's action clips, one hundred a split
    (``write_action_dataset``'s paths)."""
    root = tmp_path_factory.mktemp('actions')
    return write_action_dataset(str(root), dict(train=1, val=1, test=1))


@pytest.fixture(scope='session')
def proxy_checkpoint(tmp_path_factory) -> str:
    """Seeded weights of configs/proxy/videomae_proxy_dense.py."""
    path = tmp_path_factory.mktemp('ckpt') / 'proxy.pth'
    run_tool([sys.executable, 'tools/init_checkpoint.py',
              str(ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'),
              str(path)])
    return str(path)


@pytest.fixture(scope='session')
def tiny_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    run_tool([sys.executable, 'tools/init_checkpoint.py', str(TINY_CONFIG),
              str(path)])
    return str(path)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
