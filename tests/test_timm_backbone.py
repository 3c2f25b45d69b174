"""TimmTokenReductionViT: a timm ViT with token reduction as the frame
backbone of MMAction2's Recognizer2D/TSNHead (configs/tsn_timm_*.py)."""
import copy
import math
import sys

import pytest
import timm
import torch
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.config import Config

from conftest import ROOT, run_tool
from mmtokred.timm.backbone import TimmTokenReductionViT

TINY = 'vit_tiny_patch16_224'
TOME = dict(blocks=dict(type='ToMe', r=8), proportional_attention=True)
NEPAM = dict(input=dict(type='NEPAM', window=(1, 2), ratio=39 / 98,
                        distance='l1', keep=1))


def tiny_backbone(**kwargs) -> TimmTokenReductionViT:
    return TimmTokenReductionViT(model_name=TINY, **kwargs).eval()


def timm_features(backbone: TimmTokenReductionViT, frames, **kwargs):
    """timm's own pooled features of the backbone's weights."""
    reference = timm.create_model(TINY, num_classes=0, **kwargs).eval()
    reference.load_state_dict(backbone.model.state_dict())
    with torch.no_grad():
        return reference.forward_head(reference.forward_features(frames),
                                      pre_logits=True)


@pytest.mark.parametrize('timm_kwargs', [{}, dict(global_pool='avg')])
def test_no_reduction_equals_timm(timm_kwargs):
    backbone = tiny_backbone(**timm_kwargs)
    frames = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        features = backbone(frames)
    assert features.shape == (3, 192, 1, 1)
    torch.testing.assert_close(features[:, :, 0, 0],
                               timm_features(backbone, frames, **timm_kwargs),
                               rtol=0, atol=0)


def test_registered_by_the_plugin():
    assert MODELS.get('TimmTokenReductionViT') is TimmTokenReductionViT


@pytest.mark.parametrize('token_reduction, tokens', [
    (TOME, 197 - 12 * 8),  # ToMe: r=8 in each of the 12 blocks
    (NEPAM, 197 - 39),  # NEPAM: 39 of 98 1x2 windows -> one token each
    ('nepam-deit-s', 197 - 39),
])
def test_token_reduction_reduces(token_reduction, tokens):
    backbone = tiny_backbone(token_reduction=token_reduction)
    frames = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        x, state = backbone.model.forward_tokens(frames)
        features = backbone(frames)
        full = timm_features(backbone, frames)
    assert x.shape == (2, tokens, 192)
    assert torch.equal(state.size.sum(1), torch.full((2, 1), 197.))
    assert features.shape == (2, 192, 1, 1)
    assert torch.isfinite(features).all()
    # Fewer tokens, not other weights: the features stay near the full ones.
    cosine = torch.cosine_similarity(features[:, :, 0, 0], full, dim=1)
    assert (cosine > 0.5).all(), cosine


def test_init_weights_keeps_the_weights():
    backbone = tiny_backbone(token_reduction=TOME)
    before = copy.deepcopy(backbone.state_dict())
    backbone.init_weights()
    assert backbone.is_init
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_is_loaded_without_the_classifier(tmp_path):
    source = timm.create_model(TINY, num_classes=5)  # classifier included
    path = tmp_path / 'vit_tiny.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    backbone = tiny_backbone(checkpoint=str(path), token_reduction=TOME)
    loaded = backbone.model.state_dict()
    assert set(loaded) == set(source.state_dict()) - {'head.weight',
                                                      'head.bias'}
    assert all(torch.equal(loaded[k], source.state_dict()[k])
               for k in loaded)
    with pytest.raises(FileNotFoundError, match='not a file'):
        tiny_backbone(checkpoint=str(tmp_path / 'missing.pth'))
    with pytest.raises(ValueError, match='cls_head.num_classes'):
        tiny_backbone(num_classes=10)


def tiny_recognizer(config: str, **backbone):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    assert cfg.model.backbone.type == 'TimmTokenReductionViT'
    assert cfg.model.backbone.model_name == 'vit_base_patch16_224'
    assert cfg.model.cls_head.in_channels == 768
    crops = [step['crop_size'] for step in cfg.test_dataloader.dataset.pipeline
             if 'crop_size' in step]
    assert crops == [224]
    cfg.model.backbone.update(model_name=TINY, pretrained=False, **backbone)
    cfg.model.cls_head.update(in_channels=192, num_classes=7)
    return MODELS.build(cfg.model).eval(), cfg


@pytest.mark.parametrize('config, tokens', [
    ('tsn_timm_vit-base_tome.py', 197 - 12 * 8),
    ('tsn_timm_vit-base_nepam.py', 197 - 39),
])
def test_config_builds_a_recognizer(config, tokens):
    model, cfg = tiny_recognizer(config)
    model.init_weights()  # as the runner does: the backbone keeps its weights
    videos, segments = 2, 3
    inputs = torch.randint(0, 256, (videos, segments, 3, 224, 224),
                           dtype=torch.uint8)
    samples = [ActionDataSample().set_gt_label(i) for i in range(videos)]
    data = model.data_preprocessor(dict(inputs=list(inputs),
                                        data_samples=samples))
    with torch.no_grad():
        features = model(data['inputs'], mode='tensor')  # the backbone's
        scores = model(data['inputs'], mode='tensor', stage='head')
        predictions = model(**data, mode='predict')
        frames = data['inputs'].flatten(0, 1)
        x, _ = model.backbone.model.forward_tokens(frames)
    assert features.shape == (videos * segments, 192, 1, 1)
    assert scores.shape == (videos, 7)
    assert torch.isfinite(scores).all()
    assert len(predictions) == videos
    for prediction in predictions:
        assert prediction.pred_score.shape == (7, )
        assert torch.isfinite(prediction.pred_score).all()
        assert math.isclose(prediction.pred_score.sum().item(), 1,
                            rel_tol=1e-4)
    assert x.shape == (videos * segments, tokens, 192)


def test_recognizer_without_reduction_equals_timm():
    model, _ = tiny_recognizer('tsn_timm_vit-base_tome.py',
                               token_reduction=None)
    frames = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        features, _ = model.extract_feat(frames[None], stage='backbone')
    torch.testing.assert_close(features[:, :, 0, 0],
                               timm_features(model.backbone, frames),
                               rtol=0, atol=0)


def test_configs_build_offline_and_pretrained_says_what_to_do(tmp_path):
    """The configs as written build without the network (timm's weights
    only when asked for); asked for offline, the error says what to do."""
    code = f'''
import socket

def refuse(*args, **kwargs):
    raise AssertionError(f'the network was touched: {{args}}')

socket.socket.connect = refuse  # any download attempt fails loudly

import mmtokred.plugin
from mmaction.registry import MODELS
from mmaction.utils import register_all_modules
from mmengine.config import Config
from mmtokred.timm.backbone import TimmTokenReductionViT

register_all_modules()
for name in ('tsn_timm_vit-base_tome.py', 'tsn_timm_vit-base_nepam.py'):
    cfg = Config.fromfile({str(ROOT / 'configs')!r} + '/' + name)
    assert cfg.model.backbone.pretrained is False
    model = MODELS.build(cfg.model)
    assert model.backbone.model_name == 'vit_base_patch16_224'
try:
    TimmTokenReductionViT({TINY!r}, pretrained=True)
except OSError as exc:
    print(exc)
'''
    result = run_tool([sys.executable, '-c', code],
                      env={'HF_HUB_OFFLINE': '1',
                           'HF_HOME': str(tmp_path / 'hf')})  # no cache
    assert (f"TimmTokenReductionViT: pretrained=True loads timm's weights of "
            f"'{TINY}' from the Hugging Face hub, which cannot be reached "
            'from here, and they are not in its local cache: give them as a '
            'local file (model.backbone.checkpoint=FILE), or set '
            'model.backbone.pretrained=False') in result.stdout
