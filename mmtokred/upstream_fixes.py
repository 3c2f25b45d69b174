"""Workarounds for bugs of the upstream stack (MMAction2 1.2.0, mmengine
0.10.x).

Every workaround of the project lives here, cites the upstream issue, and
does nothing when the upstream bug is absent; the safe checkpoint-loading
policy that the second one puts under mmengine is
:mod:`mmtokred.safe_loading`. :func:`apply` runs them all; it is called on
``import mmtokred.plugin`` and is idempotent. ``import mmtokred.models``
runs only :func:`make_mmaction_importable`, without which mmaction's models
cannot be imported at all.
"""
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Optional

import torch

from . import safe_loading


# ---------------------------------------------------------------------------
# 1. mmaction2 1.2.0 wheels lack the package mmaction/models/localizers/drn
#    (no __init__.py upstream), yet localizers/__init__.py imports it, so
#    `import mmaction.models` fails. open-mmlab/mmaction2#2714 (fix #2721
#    never merged).
# ---------------------------------------------------------------------------
def _mmaction_root() -> Optional[Path]:
    spec = importlib.util.find_spec('mmaction')
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def drn_is_missing() -> bool:
    """Whether the installed mmaction lacks its DRN localizer package."""
    root = _mmaction_root()
    if root is None:
        return False
    drn = root / 'models' / 'localizers' / 'drn'
    return not (drn / 'drn.py').exists()


def make_mmaction_importable() -> None:
    """Stand in for the DRN package the wheel lacks, if it lacks it."""
    silence_known_upstream_warnings()
    name = 'mmaction.models.localizers.drn'
    if name in sys.modules or not drn_is_missing():
        return

    class DRN:
        """Stands in for the DRN localizer that the mmaction wheel lacks."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'DRN is missing from the installed mmaction2 wheel '
                '(open-mmlab/mmaction2#2714); install mmaction2 from source '
                'to use it.')

    package = types.ModuleType(name)
    package.__path__ = []  # a package, so `from .drn.drn import DRN` works
    module = types.ModuleType(name + '.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[name] = package
    sys.modules[name + '.drn'] = module


# The install pins make two more upstream bugs absent, so no code here
# works around them: setuptools < 81 keeps the `pkg_resources` that mmengine
# 0.10 resolves `mmaction::` config bases through (pypa/setuptools#5007), and
# `importlib-metadata` is installed for mmaction/utils/dependency.py, which
# imports it without declaring it (setup.cfg, install_requires).


# ---------------------------------------------------------------------------
# 2. torch >= 2.6 loads with weights_only=True by default and mmengine never
#    passes weights_only (open-mmlab/mmengine#1655, fix #1650 unmerged), so
#    checkpoints written by the Runner (HistoryBuffer, numpy scalars in their
#    meta) fail to load. mmtokred.safe_loading allows exactly those classes
#    while mmengine loads a checkpoint (patch_checkpoint_loader, applied
#    below); safe loading is never disabled.
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# 3. `--launcher pytorch` without CUDA: mmengine's init_dist calls
#    torch.cuda.set_device unconditionally and the Runner passes device_ids
#    to DDP, which rejects them for CPU modules (mmengine/dist/utils.py
#    _init_dist_pytorch and Runner.wrap_model; no upstream issue found).
#    Initialise gloo ourselves, so the Runner skips init_dist, and wrap
#    without device_ids.
#    With CUDA but fewer GPUs than processes per node, init_dist's
#    set_device fails with "invalid device ordinal"; tools/torchrun.sh then
#    hides the GPUs, and a launch that bypasses it gets an error that says so.
#    Without CUDA, the config also says gloo (env_cfg.dist_cfg.backend,
#    mmaction's default_runtime.py says nccl), so that the config the Runner
#    logs and dumps names the backend used.
# ---------------------------------------------------------------------------
def prepare_cpu_distributed(cfg) -> None:
    """Make ``cfg`` runnable under ``--launcher pytorch`` on a CPU machine.

    Without CUDA, sets ``env_cfg.dist_cfg.backend`` to gloo, whatever the
    launcher. Does nothing else when the launcher is not pytorch, nor when
    CUDA has a GPU for every process of the node (it refuses fewer, naming
    the fix). The caller must call :func:`finish_distributed` at exit.
    """
    import torch.distributed as dist
    if not torch.cuda.is_available():
        cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo'})
    if cfg.get('launcher') != 'pytorch':
        return
    if torch.cuda.is_available():
        procs = int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
        gpus = torch.cuda.device_count()
        if procs > gpus:
            raise RuntimeError(
                f'{procs} processes per node but {gpus} GPU(s) visible: '
                'each process needs its own GPU. Start at most '
                f'{gpus} processes, or launch with tools/dist_test.sh / '
                'tools/torchrun.sh, which run them on the CPU over gloo '
                'when GPUs are too few (or set CUDA_VISIBLE_DEVICES= '
                'yourself)')
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def finish_distributed() -> None:
    """Barrier and tear down a process group this process set up."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------
# 4. AccMetric converts scores to numpy, which has no bfloat16: testing under
#    CPU autocast (bf16, `tools/test.py --amp`) fails with "Got unsupported
#    ScalarType BFloat16" (mmaction/evaluation/metrics/acc_metric.py; no
#    upstream issue found). Score in float32 what arrives in bfloat16.
# ---------------------------------------------------------------------------
def _patch_acc_metric_bfloat16() -> None:
    from mmaction.evaluation.metrics import AccMetric
    original = AccMetric.process
    if getattr(original, '_mmtokred_bf16', False):
        return

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            score = sample.get('pred_score') if isinstance(sample,
                                                           dict) else None
            if torch.is_tensor(score) and score.dtype == torch.bfloat16:
                sample['pred_score'] = score.float()
        return original(self, data_batch, data_samples)

    process._mmtokred_bf16 = True
    AccMetric.process = process


# ---------------------------------------------------------------------------
# 5. Two harmless warnings of the pinned stack, printed by every tool (and
#    two logged notices, section 6):
#    - mmcv-lite 2.1.0, mmcv/cnn/bricks/transformer.py line 33, warns "Fail to
#      import ``MultiScaleDeformableAttention``..." whenever mmaction.models
#      imports mmcv.cnn.bricks.transformer (mmaction/models/common/
#      transformer.py); mmcv-lite has no compiled ops by design and nothing
#      here uses that module (open-mmlab/mmcv#1975).
#    - setuptools < 81, pkg_resources/__init__.py, warns "pkg_resources is
#      deprecated as an API..." each time mmengine 0.10's is_installed
#      (mmengine/utils/package_utils.py) imports and reloads pkg_resources,
#      which Config.fromfile does for every `mmaction::` base; the pin is
#      what keeps pkg_resources (pypa/setuptools#5007; mmengine moves to
#      importlib.metadata in open-mmlab/mmengine#1676, after 0.10.7).
#    Ignore exactly these two messages from exactly those modules (the
#    importer of pkg_resources, or importlib for its reload); every other
#    warning, of these modules too, still shows.
# ---------------------------------------------------------------------------
def silence_known_upstream_warnings() -> None:
    """Filter the two warnings above and the two notices of section 6, and
    nothing else (idempotent)."""
    import re
    import warnings
    for message, module in (
        ('Fail to import ``MultiScaleDeformableAttention`` from '
         '``mmcv.ops.multi_scale_deform_attn``, You should install ``mmcv`` '
         'rather than ``mmcv-lite``', r'mmcv\.cnn\.bricks\.transformer\Z'),
        ('pkg_resources is deprecated as an API.',
         r'(mmengine\.utils\.package_utils|importlib)\Z'),
    ):
        warnings.filterwarnings('ignore', message=re.escape(message),
                                category=UserWarning, module=module)
    _drop_file_client_deprecation_messages()


# ---------------------------------------------------------------------------
# 6. Two deprecation notices of mmengine 0.10.7, logged (print_log, WARNING,
#    to the current MMLogger: not Python warnings) by every tool that reads
#    a video: mmaction 1.2.0's DecordInit (mmaction/datasets/transforms/
#    loading.py, line 1141) builds `FileClient(self.io_backend)`, and
#    mmengine/fileio/file_client.py logs '"FileClient" will be deprecated in
#    future...' (FileClient.__new__, lines 89-94), then '"HardDiskBackend"
#    is the alias of "LocalBackend"...' (HardDiskBackend.__init__, lines
#    18-22; 'disk' maps to it); no upstream issue found. Nothing for a user
#    to do: mmaction would have to move to mmengine.fileio's functions.
#    Drop exactly these two messages of exactly that module: its print_log
#    (the only logging it does) forwards every other message.
# ---------------------------------------------------------------------------
#: The exact messages of mmengine/fileio/file_client.py dropped.
FILE_CLIENT_DEPRECATIONS = frozenset({
    '"FileClient" will be deprecated in future. Please use io functions in '
    'https://mmengine.readthedocs.io/en/latest/api/fileio.html#file-io',
    '"HardDiskBackend" is the alias of "LocalBackend" and the former will be '
    'deprecated in future.',
})


def _drop_file_client_deprecation_messages() -> None:
    """Wrap the print_log of mmengine.fileio.file_client (idempotent)."""
    try:
        from mmengine.fileio import file_client
    except ImportError:
        return
    original = getattr(file_client, 'print_log', None)
    if original is None or getattr(original, '_mmtokred_quiet', False):
        return

    def print_log(msg, *args, **kwargs):
        if msg in FILE_CLIENT_DEPRECATIONS:
            return
        return original(msg, *args, **kwargs)

    print_log._mmtokred_quiet = True
    file_client.print_log = print_log


_applied = False


def apply() -> None:
    """Apply every workaround whose upstream bug is present."""
    global _applied
    if _applied:
        return
    make_mmaction_importable()
    safe_loading.patch_checkpoint_loader()
    _patch_acc_metric_bfloat16()
    _applied = True
