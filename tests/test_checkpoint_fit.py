"""A checkpoint must fit the model it is loaded into, through every loader
(mmtokred.checkpoint_fit): mmengine's own loads a checkpoint of another
model with a warning and 0 of its tensors."""
import sys
import uuid

import pytest
import torch
from conftest import ROOT, TINY_CONFIG, data_options, run_tool
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint as mmengine_load
from torch import nn

from mmtokred import checkpoint_fit
from mmtokred.checkpoint_fit import CheckpointMismatch, CheckpointNotFound
from mmtokred.console import CheckedRunner
from mmtokred.experiments.clips import recogniser

PROXY = ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'
PRETRAIN = ROOT / 'configs' / 'proxy' / 'videomae_proxy_pretrain.py'
FINETUNE = ROOT / 'configs' / 'proxy' / 'videomae_proxy_finetune.py'


class Net(nn.Module):

    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)


def test_a_checkpoint_that_fills_every_tensor_loads():
    fit = checkpoint_fit.check(Net(), Net().state_dict(), 'x.pth')
    assert (len(fit.loaded), fit.total, fit.unloaded) == (4, 4, [])
    assert fit.counts() == '4 of 4 tensors of Net loaded'
    assert not fit.partial


def test_another_models_checkpoint_is_refused_naming_counts_and_shapes():
    with pytest.raises(CheckpointMismatch) as error:
        checkpoint_fit.check(Net(8), Net(4).state_dict(), 'other.pth')
    message = str(error.value)
    assert '1 of 4 tensors of Net loaded (3 of another shape, 0 missing' \
        in message  # only head.bias (3 classes) has the same shape
    assert 'body.weight [4, 4] in the checkpoint, [8, 8] in the model' \
        in message
    assert 'partial_load' in message and '--partial-load' in message


def test_partial_load_lets_only_what_it_names_stay_unloaded():
    state = Net().state_dict()
    del state['head.weight'], state['head.bias']
    with pytest.raises(CheckpointMismatch, match='2 missing'):
        checkpoint_fit.check(Net(), state, 'backbone.pth')
    fit = checkpoint_fit.check(Net(), state, 'backbone.pth', ['head'])
    assert fit.unloaded == ['head.weight', 'head.bias']
    assert checkpoint_fit.check(Net(), state, 'b.pth', ['head.*']).loaded \
        == ['body.weight', 'body.bias']
    assert checkpoint_fit.check(Net(), state, 'b.pth', True).unloaded
    with pytest.raises(CheckpointMismatch):  # names the body: not the head
        checkpoint_fit.check(Net(), state, 'b.pth', ['body'])


def test_partial_load_never_lets_nothing_load():
    with pytest.raises(CheckpointMismatch, match='none of this checkpoint'):
        checkpoint_fit.check(Net(8, 5), Net(4).state_dict(), 'o.pth', True)


def test_checkpoint_tensors_the_model_has_no_place_for_are_refused():
    """A checkpoint of a deeper model would fill the first blocks."""
    state = {**Net().state_dict(), 'decoder.weight': torch.zeros(2)}
    with pytest.raises(CheckpointMismatch, match=r'first unused \(no place '
                       r'in the model\): decoder.weight'):
        checkpoint_fit.check(Net(), state, 'pretrain.pth')
    fit = checkpoint_fit.check(Net(), state, 'pretrain.pth', ['decoder'])
    assert fit.unused == ['decoder.weight'] and not fit.unloaded
    assert fit.line('p.pth') == ('checkpoint p.pth (partial load): 4 of 4 '
                                 'tensors of Net loaded; 1 of the checkpoint '
                                 'unused: decoder.weight')


@pytest.mark.parametrize('bad', [3, ['head', 2], [''], {'head': True}])
def test_a_bad_partial_load_is_refused(bad):
    with pytest.raises(ValueError, match='partial_load must be'):
        checkpoint_fit.check(Net(), Net().state_dict(), 'x', bad)


def test_mmengine_loads_are_checked_inside_and_unchanged_outside(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': Net(4).state_dict()}, path)
    model = Net(8)
    mmengine_load(model, str(path), logger='silent')  # mmengine's own
    with checkpoint_fit.checked_loads(source=str(path)), \
            pytest.raises(CheckpointMismatch, match='1 of 4 tensors'):
        mmengine_load(model, str(path), logger='silent')
    with pytest.raises(CheckpointMismatch, match=str(path)):
        checkpoint_fit.load_checkpoint(model, str(path))


def test_a_checkpoint_that_is_not_there_is_named(tmp_path):
    with pytest.raises(CheckpointNotFound, match=f'checkpoint {tmp_path}/no'
                       '.pth: no such file; pass an existing file or a URL'):
        checkpoint_fit.load_checkpoint(Net(), str(tmp_path / 'no.pth'))
    with pytest.raises(CheckpointNotFound, match='(a directory)'):
        checkpoint_fit.require_file(str(tmp_path))
    checkpoint_fit.require_file('https://download.openmmlab.com/x.pth')


def test_the_runner_names_a_checkpoint_that_is_not_there(tmp_path):
    cfg = Config.fromfile(PROXY)
    cfg.load_from = str(tmp_path / 'missing.pth')
    with pytest.raises(CheckpointNotFound, match='missing.pth: no such'):
        runner_of(cfg, tmp_path).load_or_resume()


def test_the_tools_model_refuses_another_models_checkpoint(proxy_checkpoint):
    """tools/calibrate.py, sweep.py and redundancy.py load through it."""
    cfg = Config.fromfile(TINY_CONFIG)
    with pytest.raises(CheckpointMismatch) as error:
        recogniser(cfg, proxy_checkpoint, device='cpu')
    message = str(error.value)
    assert '0 of 59 tensors of Recognizer3D loaded' in message
    # What it is of: the shape its tensors show, and the configs of it.
    assert 'embed_dims 64' in message and 'depth 8' in message
    assert 'configs/proxy/videomae_proxy_dense.py' in message


def test_test_tool_stops_on_another_models_checkpoint(video_data,
                                                      proxy_checkpoint,
                                                      tmp_path):
    result = run_tool([
        sys.executable, 'tools/test.py', str(TINY_CONFIG), proxy_checkpoint,
        '--work-dir', str(tmp_path), '--cfg-options',
        *data_options(video_data)], check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'does not fit the model: 0 of 59 tensors' in result.stderr
    assert 'Traceback' not in result.stderr


def runner_of(cfg: Config, tmp_path) -> CheckedRunner:
    """A runner of its own name (two in one second would share one)."""
    init_default_scope('mmaction')
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'checkpoint_fit_{uuid.uuid4().hex}'
    return CheckedRunner.from_cfg(cfg)


def finetune_runner(tmp_path, checkpoint, **options):
    cfg = Config.fromfile(FINETUNE)
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    cfg.merge_from_dict(options)
    return runner_of(cfg, tmp_path)


def test_a_finetune_from_pretraining_says_what_starts_new(tmp_path):
    """configs/proxy/videomae_proxy_finetune.py: init_cfg's Pretrained
    loads the encoder; its final norm goes unused and fc_norm is new (the
    config's partial_load)."""
    init_default_scope('mmaction')
    pretrainer = MODELS.build(Config.fromfile(PRETRAIN).model)
    path = str(tmp_path / 'pretrain.pth')
    torch.save({'state_dict': pretrainer.state_dict()}, path)
    runner = finetune_runner(tmp_path, path)
    runner._init_model_weights()
    (source, fit), = runner.checkpoint_fits
    assert source == path and fit.missing == ['backbone.fc_norm.weight',
                                              'backbone.fc_norm.bias']
    assert fit.unused == ['backbone.norm.weight', 'backbone.norm.bias']
    loaded = runner.model.backbone.blocks[0].attn.qkv.weight
    assert torch.equal(loaded, pretrainer.backbone.blocks[0].attn.qkv.weight)
    # Without the config's opt-in the new fc_norm stops it.
    with pytest.raises(CheckpointMismatch, match='backbone.fc_norm.weight'):
        finetune_runner(tmp_path, path,
                        partial_load=None)._init_model_weights()


def test_a_finetune_from_another_models_checkpoint_stops(tmp_path,
                                                         tiny_checkpoint):
    runner = finetune_runner(tmp_path, tiny_checkpoint)
    with pytest.raises(CheckpointMismatch,
                       match='none of this checkpoint fits'):
        runner._init_model_weights()


def test_load_from_of_another_model_stops_the_runner(tmp_path,
                                                     tiny_checkpoint):
    cfg = Config.fromfile(ROOT / 'configs' / 'proxy' /
                          'videomae_proxy_tome_finetune.py')
    cfg.load_from = tiny_checkpoint
    runner = runner_of(cfg, tmp_path)
    with pytest.raises(CheckpointMismatch, match='0 of 111 tensors'):
        runner.load_or_resume()


@pytest.mark.parametrize('method', ['tome', 'nepam_threshold'])
def test_calibrate_stops_on_another_models_checkpoint_before_decoding(
        proxy_checkpoint, tmp_path, method):
    """Before: 0 of 59 tensors loaded, KL reported on random weights and a
    config written. The demo config's clips are not there: the checkpoint
    is refused first."""
    result = run_tool([
        sys.executable, 'tools/calibrate.py', str(TINY_CONFIG),
        proxy_checkpoint, '--flops', '0.5', '--method', method, '--out',
        str(tmp_path / 'c.py')], check=False)
    assert result.returncode == 1
    assert 'does not fit the model: 0 of 59 tensors' in result.stderr
    assert not (tmp_path / 'c.py').exists()
