"""Each workaround of mmtokred.upstream_fixes, with and without its bug,
and the safe-loading policy of mmtokred.safe_loading that the second one
puts under mmengine."""
import argparse
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_CONFIG, data_options, run_tool, test_metrics
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint

from mmtokred import safe_loading, upstream_fixes


def python(code: str) -> str:
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_mmaction_models_import_after_mmtokred_models():
    out = python('import mmtokred.models, mmaction.models, sys; '
                 "print('mmaction.models.localizers.drn' in sys.modules)")
    assert out == str(upstream_fixes.drn_is_missing())


PATCHES = ('from mmengine.runner.checkpoint import CheckpointLoader as C; '
           'from mmaction.evaluation.metrics import AccMetric as A; '
           "print(hasattr(C.load_checkpoint, '_mmtokred_safe'), "
           "hasattr(A.process, '_mmtokred_bf16'))")


def test_only_the_plugin_patches_the_upstream_stack():
    assert python('import mmtokred.models; ' + PATCHES) == 'False False'
    assert python('import mmtokred.plugin; ' + PATCHES) == 'True True'


def test_drn_detection(tmp_path, monkeypatch):
    monkeypatch.setattr(upstream_fixes, '_mmaction_root', lambda: tmp_path)
    assert upstream_fixes.drn_is_missing()
    drn = tmp_path / 'models' / 'localizers' / 'drn'
    drn.mkdir(parents=True)
    (drn / 'drn.py').write_text('')
    assert not upstream_fixes.drn_is_missing()


def test_drn_placeholder_explains_itself():
    if not upstream_fixes.drn_is_missing():
        pytest.skip('this mmaction ships DRN')
    from mmaction.models.localizers import DRN
    with pytest.raises(ImportError, match='2714'):
        DRN()


def test_pins_make_the_packaging_workarounds_unneeded():
    """setup.cfg pins what mmaction2 1.2.0 and mmengine 0.10 import without
    declaring, so mmtokred patches neither: both imports work as they are
    and `mmaction::` bases resolve."""
    out = python('import pkg_resources, importlib_metadata, mmtokred\n'
                 'from mmengine.config import Config\n'
                 f"cfg = Config.fromfile({str(TINY_CONFIG)!r})\n"
                 'print(cfg.model.backbone.type, cfg.test_evaluator.type)')
    assert out == 'TokenReductionVisionTransformer AccMetric'


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory, video_data) -> Path:
    """A checkpoint written by mmengine's Runner after one training epoch."""
    work_dir = tmp_path_factory.mktemp('train')
    cfg = Config.fromfile(TINY_CONFIG)
    train_pipeline = [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=8, frame_interval=2, num_clips=1),
        dict(type='DecordDecode'),
        dict(type='Resize', scale=(-1, 64)),
        dict(type='CenterCrop', crop_size=64),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs')
    ]
    cfg.merge_from_dict(
        dict(
            work_dir=str(work_dir),
            experiment_name='runner_checkpoint',
            train_dataloader=dict(
                batch_size=2, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=dict(type='VideoDataset',
                             ann_file=video_data['ann_file'],
                             data_prefix=dict(video=video_data['videos']),
                             pipeline=train_pipeline)),
            train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=1,
                           val_interval=10),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
            default_hooks=dict(checkpoint=dict(interval=1))))
    Runner.from_cfg(cfg).train()
    return work_dir / 'epoch_1.pth'


def test_runner_checkpoint_is_unsafe_for_plain_torch_load(runner_checkpoint):
    # The premise: safe loading stays on globally and rejects the file.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(runner_checkpoint)


def test_runner_checkpoint_loads_back(runner_checkpoint):
    from mmaction.registry import MODELS
    model = MODELS.build(Config.fromfile(TINY_CONFIG).model)
    checkpoint = load_checkpoint(model, str(runner_checkpoint), strict=True)
    assert 'message_hub' in checkpoint and 'optimizer' in checkpoint


def test_runner_checkpoint_through_test_tool(runner_checkpoint, video_data,
                                             tmp_path):
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG),
        str(runner_checkpoint), '--work-dir', str(tmp_path), '--cfg-options',
        *data_options(video_data)
    ])
    assert 'acc/top1' in test_metrics(result.stdout + result.stderr)


class Untrusted:
    pass


def test_unknown_class_fails_clearly_and_opt_in_works(tmp_path, monkeypatch):
    path = tmp_path / 'odd.pth'
    torch.save(dict(state_dict={}, meta=dict(odd=Untrusted())), path)
    with pytest.raises(pickle.UnpicklingError,
                       match=f'the class {__name__}.Untrusted.*export '
                       f'{safe_loading.EXTRA_SAFE_GLOBALS_ENV}='
                       f'{__name__}.Untrusted'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path), strict=False)
    monkeypatch.setenv(safe_loading.EXTRA_SAFE_GLOBALS_ENV,
                       f'{__name__}.Untrusted')
    load_checkpoint(torch.nn.Linear(1, 1), str(path), strict=False)
    # The opt-in lasted for that load only: safe loading is still global.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


MARKER_NAME = 'payload_ran'


class RunsSystem:
    """Unpickled, it would run a shell command that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f'touch {self.marker}', )


class RunsEval(RunsSystem):

    def __reduce__(self):
        return eval, (f'open({str(self.marker)!r}, "w")', )


class WritesThroughGetattr(RunsSystem):
    """Pickles as getattr(array, 'tofile')(marker): a file write through a
    getattr of an allowed class (ndarray)."""

    def __reduce__(self):
        import numpy as np
        return np.arange(3).tofile, (str(self.marker), )


def write_payload(path: Path, payload, kind: str) -> None:
    state = dict(state_dict={}, meta=dict(odd=payload))
    if kind == 'zip':
        torch.save(state, path)
    elif kind == 'legacy':
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, as torch.load's legacy path reads it first
        path.write_bytes(pickle.dumps(state))


#: torch's weights-only unpickler warns that a bare pickle (written by
#: pickle.dumps, protocol 4) is not of torch.save's protocol (2): expected of
#: the 'raw' payloads, so ignored for them only.
PICKLE_PROTOCOL_WARNING = ('ignore:Detected pickle protocol 4 in the '
                           'checkpoint, which was not the default pickle '
                           'protocol used by:UserWarning')


@pytest.mark.parametrize('kind', [
    'zip', 'legacy',
    pytest.param('raw', marks=pytest.mark.filterwarnings(
        PICKLE_PROTOCOL_WARNING))])
@pytest.mark.parametrize('payload', [RunsSystem, RunsEval,
                                     WritesThroughGetattr])
def test_malicious_checkpoints_never_run(tmp_path, kind, payload):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / 'evil.pth'
    write_payload(path, payload(marker), kind)
    with pytest.raises((pickle.UnpicklingError, RuntimeError)) as error:
        load_checkpoint(torch.nn.Linear(1, 1), str(path), strict=False)
    assert not marker.exists()
    if isinstance(error.value, pickle.UnpicklingError) and kind != 'raw':
        message = str(error.value)
        assert 'refusing' in message.lower()
        assert safe_loading.EXTRA_SAFE_GLOBALS_ENV not in message


@pytest.mark.parametrize('payload', [RunsSystem, RunsEval,
                                     WritesThroughGetattr])
def test_safe_load_applies_the_same_policy(tmp_path, payload):
    """safe_loading.load (the timm loader's) refuses what mmengine's loads
    refuse, and allows timm's training arguments for that load only."""
    marker = tmp_path / MARKER_NAME
    path = tmp_path / 'evil.pth'
    write_payload(path, payload(marker), 'zip')
    with pytest.raises(pickle.UnpicklingError, match='^Refusing'):
        safe_loading.load(str(path))
    assert not marker.exists()
    trained = tmp_path / 'trained.pth'
    torch.save(dict(state_dict={'w': torch.ones(1)},
                    args=argparse.Namespace(lr=0.1)), trained)
    assert safe_loading.load(str(trained))['args'].lr == 0.1
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trained)


@pytest.mark.parametrize('name', [
    'builtins.eval', 'builtins.exec', 'os.system', 'builtins.getattr',
    'subprocess.Popen', 'subprocess.run', 'io.FileIO'])
def test_opt_in_refuses_functions_and_unsafe_classes(tmp_path, monkeypatch,
                                                     name):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / 'evil.pth'
    write_payload(path, RunsEval(marker), 'zip')
    monkeypatch.setenv(safe_loading.EXTRA_SAFE_GLOBALS_ENV, name)
    with pytest.raises(ValueError, match=f'{name}.*refused'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path), strict=False)
    assert not marker.exists()


def test_bad_opt_in_name_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv(safe_loading.EXTRA_SAFE_GLOBALS_ENV, 'no_such.Thing')
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': {}}, path)
    with pytest.raises(ValueError, match='no_such.Thing'):
        load_checkpoint(torch.nn.Linear(1, 1), str(path), strict=False)


def test_acc_metric_scores_bfloat16():
    from mmaction.evaluation.metrics import AccMetric
    metric = AccMetric()
    sample = dict(pred_score=torch.tensor([0.1, 0.9], dtype=torch.bfloat16),
                  gt_label=torch.tensor([1]))
    metric.process(None, [sample])
    assert metric.compute_metrics(metric.results)['top1'] == 1.0


@pytest.mark.parametrize('owner, name', [('HistoryBuffer', '__init__'),
                                         ('os', 'system')])
def test_getattr_stand_in_allows_only_statistics(owner, name):
    import os

    from mmengine.logging import HistoryBuffer
    owner = HistoryBuffer if owner == 'HistoryBuffer' else os
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        safe_loading._history_buffer_statistic(owner, name)
    assert safe_loading._history_buffer_statistic(
        HistoryBuffer, 'mean') is HistoryBuffer.mean


@pytest.mark.parametrize('cuda, launcher, backend', [
    (False, 'none', 'gloo'), (False, 'pytorch', 'gloo'),
    (True, 'none', 'nccl')])
def test_config_names_the_backend_used(monkeypatch, cuda, launcher, backend):
    import torch.distributed as dist
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(dist, 'init_process_group', lambda **kw: None)
    cfg = Config.fromfile(TINY_CONFIG)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # mmaction's default
    cfg.launcher = launcher
    upstream_fixes.prepare_cpu_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == backend
    assert 'backend' in cfg.pretty_text and f"backend='{backend}'" in \
        cfg.pretty_text
    bare = Config(dict(launcher='none'))  # no env_cfg: one is made
    upstream_fixes.prepare_cpu_distributed(bare)
    assert bare.get('env_cfg', {}).get('dist_cfg', {}).get(
        'backend') == (None if cuda else 'gloo')
