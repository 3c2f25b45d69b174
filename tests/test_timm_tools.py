"""tools/eval_timm.py and tools/benchmark_timm.py end to end on a tiny timm
ViT with random weights (needs timm: the conftest leaves this file out
without it)."""
import json
import pickle
import re
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import run_tool

MODEL = 'deit_tiny_patch16_224'


class NotAWeight:
    """Pickled into a checkpoint that safe loading must refuse."""


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """2 classes x 4 random 64x64 PNGs."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for name in ('cat', 'dog'):
        (root / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3),
                                         dtype=np.uint8)).save(
                root / name / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def rigged_checkpoint(tmp_path_factory):
    """Random DeiT-Tiny weights whose head always ranks class 0, then 1:
    top-1 is the share of class 0, top-5 100%, whatever the tokens."""
    torch.manual_seed(0)
    state = timm.create_model(MODEL, pretrained=False).state_dict()
    state['head.weight'].zero_()
    state['head.bias'].zero_()
    state['head.bias'][:2] = torch.tensor([2., 1.])
    path = tmp_path_factory.mktemp('ckpt') / 'deit_tiny.pth'
    torch.save({'model': state, 'epoch': 300}, path)
    return path


def test_eval_timm(image_folder, rigged_checkpoint, tmp_path):
    out = tmp_path / 'eval.json'
    result = run_tool([
        sys.executable, 'tools/eval_timm.py', MODEL, str(image_folder),
        '--token-reduction',
        "{'blocks': {'type': 'ToMe', 'r': 8}, 'proportional_attention': True}",
        '--checkpoint', str(rigged_checkpoint), '--limit', '6',
        '--batch-size', '4', '--workers', '0', '--json', str(out)])
    lines = result.stdout.strip().splitlines()
    assert 'on 6 images of' in lines[0], result.stdout
    assert lines[1].split() == ['model', 'top-1', 'top-5', 'GMACs',
                                'of', 'timm'], result.stdout
    figures = {}
    for name in ('timm', 'reduced'):
        line = next(line for line in lines if line.startswith(name + ' '))
        top1, top5, gmacs = map(float, line.split()[1:4])
        figures[name] = top1, top5, gmacs
    # Evenly spread: 3 of each class; the rigged head says class 0 always.
    assert figures['timm'][:2] == figures['reduced'][:2] == (50.0, 100.0)
    assert figures['reduced'][2] < figures['timm'][2]
    assert 'difference (reduced - timm): top-1 +0.00  top-5 +0.00' in lines
    assert 'agreement of top-1 predictions: 100.00%' in lines
    saved = json.loads(out.read_text())
    assert saved['images'] == 6 and saved['classes'] == 2
    assert saved['token_reduction']['blocks'] == {'type': 'ToMe', 'r': 8}


def test_eval_timm_refuses_unsafe_checkpoint(image_folder, tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'model': {}, 'extra': NotAWeight()}, path)
    result = run_tool([
        sys.executable, 'tools/eval_timm.py', MODEL, str(image_folder),
        '--token-reduction', 'ppt-deit-s', '--checkpoint', str(path)],
        check=False)
    assert result.returncode != 0
    assert 'weights_only' in result.stderr, result.stderr[-2000:]


def test_one_checkpoint_loader(tmp_path):
    """The benchmark, the evaluation and the frame backbone load weights
    through one function: a training script's checkpoint (EMA weights
    preferred, DDP prefix, its arguments beside) into a model with or
    without its classifier; code in a file is refused, saying why."""
    import argparse

    from mmtokred.benchmark import image
    from mmtokred.timm import backbone
    from mmtokred.timm.checkpoint import load_checkpoint
    assert backbone.load_checkpoint is image.load_checkpoint is \
        load_checkpoint
    torch.manual_seed(0)
    ema = timm.create_model(MODEL).state_dict()
    path = tmp_path / 'trained.pth'
    torch.save({'model': {'module.' + k: v.zero_() for k, v in
                          timm.create_model(MODEL).state_dict().items()},
                'model_ema': {'module.' + k: v for k, v in ema.items()},
                'args': argparse.Namespace(model=MODEL)}, path)
    classifier = timm.create_model(MODEL)
    load_checkpoint(classifier, str(path))
    features = timm.create_model(MODEL, num_classes=0)
    load_checkpoint(features, str(path))
    for model in (classifier, features):
        for key, value in model.state_dict().items():
            assert torch.equal(value, ema[key]), key
    assert 'head.weight' not in features.state_dict()
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'model': ema, 'extra': NotAWeight()}, unsafe)
    with pytest.raises(pickle.UnpicklingError,
                       match=f'holds the class {__name__}.NotAWeight'):
        load_checkpoint(classifier, str(unsafe))


def test_another_models_checkpoint_is_refused(tmp_path):
    """A DeiT-S checkpoint into a DeiT-Ti: stopped naming the counts and
    the shape its tensors show, not torch's list of size mismatches."""
    from mmtokred.checkpoint_fit import CheckpointMismatch
    from mmtokred.timm.checkpoint import load_checkpoint
    path = tmp_path / 'small.pth'
    torch.save(timm.create_model('deit_small_patch16_224').state_dict(),
               path)
    with pytest.raises(CheckpointMismatch) as error:
        load_checkpoint(timm.create_model(MODEL), str(path))
    message = str(error.value)
    assert 'tensors of VisionTransformer loaded' in message
    assert 'a ViT with embed_dims 384, patch_size 16' in message
    assert 'depth 12' in message


def test_benchmark_timm_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_tool([
        sys.executable, 'tools/benchmark_timm.py', MODEL,
        '--token-reduction', 'ppt-deit-s', '--batch-size', '1',
        '--repeats', '1', '--warmup', '0', '--device', 'cpu',
        '--json', str(out)])
    assert 'ppt-deit-s' in result.stdout and 'GMACs' in result.stdout
    saved = json.loads(out.read_text())
    (bench, ) = saved['results']
    assert bench['model'] == MODEL and bench['repeats'] == 1
    assert bench['input_shape'] == [1, 3, 224, 224]
    rows = bench['rows']
    assert list(rows) == ['timm', 'ppt-deit-s']
    # The limit, measured in the same run, beside the nominal peak.
    assert bench['limits']['fp32']['achievable']['gflops'] > 0
    assert 'fp32 limit: achievable' in result.stdout
    keys = {'gflops_per_image', 'flops_ratio_vs_timm', 'images_per_s',
            'seconds_per_batch', 'seconds_per_repeat', 'spread',
            'speedup_vs_timm', 'speedup_range', 'activation_mib',
            'total_mib', 'peak_mem_ratio_vs_timm', 'tokens',
            'token_reduction'}
    for row in rows.values():
        assert keys <= set(row), keys - set(row)
        assert len(row['seconds_per_repeat']) == 1 and row['images_per_s'] > 0
    timm_row, ppt = rows['timm'], rows['ppt-deit-s']
    assert ppt['gflops_per_image'] < timm_row['gflops_per_image']
    assert ppt['flops_ratio_vs_timm'] == pytest.approx(
        ppt['gflops_per_image'] / timm_row['gflops_per_image'])
    assert ppt['flops_ratio_vs_timm'] <= 0.65  # PPT's 2.95 of 4.6 GMACs
    assert timm_row['tokens'][0] == timm_row['tokens'][-1] == 197
    assert ppt['tokens'][-1] == 197 - 50 - 50 - 48  # the official clamp


def test_benchmark_device_check_on_this_torch_build():
    """This environment's torch is the registry's default (CUDA) build: on
    a machine without a GPU, --device cuda is refused with the way out
    (the main environment's CPU-only torch: tests/test_tools.py)."""
    from mmtokred.measure.forward import check_device
    if torch.cuda.is_available():
        assert check_device('cuda', '--device') == torch.device('cuda')
    elif torch.version.cuda is not None:
        with pytest.raises(ValueError, match=(
                rf'^--device cuda: this torch \({re.escape(torch.__version__)}'
                rf'\) has CUDA {torch.version.cuda} but sees no GPU: check '
                'the driver and CUDA_VISIBLE_DEVICES, or use --device cpu$')):
            check_device('cuda', '--device')
    else:
        with pytest.raises(ValueError, match='has no CUDA; install the CUDA '
                           'build of torch or use --device cpu$'):
            check_device('cuda', '--device')
