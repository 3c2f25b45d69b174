"""Every config under configs/: it parses, imports the plugin, names the
official weights where it inherits an official base, asks for the token
reduction its name says, and its backbone builds (the budget planned on
its configured clips). The timm TSN configs need timm: they are built in
the timm environment (tests/test_timm_backbone.py)."""
import pytest
from mmaction.registry import MODELS
from mmengine.config import Config

from conftest import ROOT
from mmtokred.measure.flops import ShapeFlops

#: Settings inherited beside a config, not configs themselves.
FRAGMENTS = ('configs/finetune/k400_schedule.py',
             'configs/_base_/mmtokred_videomae.py')
CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if not p.name.startswith('tsn_timm_')
    and str(p.relative_to(ROOT)) not in FRAGMENTS)
#: The share of the dense FLOPs each reduced Kinetics-400 config says it
#: runs at: the other models at ViT-B's shares.
FLOPS_SHARES = {
    'videomae_nepam.py': 0.70,
    'videomae_nepam_half.py': 0.50,
    'videomae_tome.py': 0.60,
    'videomae_ppt.py': 0.60,
    'videomae_patchsim.py': 0.60,
    'videomae_jmp.py': 0.90,
    'videomae_nepam_jmp.py': 0.50,
    'videomae_vit-large/videomae_nepam.py': 0.70,
    'videomae_vit-large/videomae_tome.py': 0.60,
    'videomaev2_vit-base/videomae_nepam.py': 0.70,
    'videomaev2_vit-base/videomae_tome.py': 0.60,
    'videomaev2_vit-small/videomae_nepam.py': 0.70,
    'videomaev2_vit-small/videomae_tome.py': 0.60,
}
#: Trained here or randomly initialised: no official weights (the proxy's
#: fine-tunes start from a proxy model trained here).
LOCAL = ('configs/demo/', 'configs/proxy/')
#: Without token reduction: the dense models, the proxy's pretraining and
#: its fine-tune from the pretrained encoder.
DENSE = ('_dense.py', '_pretrain.py', '_proxy_finetune.py')


def test_the_configs_are_found():
    assert len(CONFIGS) == 27
    assert len([c for c in CONFIGS if c.endswith('videomae_dense.py')]) == 4
    kinetics_reduced = {
        c for c in CONFIGS if not c.endswith(DENSE)
        and not c.startswith(LOCAL + ('configs/finetune/', ))}
    assert kinetics_reduced == {f'configs/{name}' for name in FLOPS_SHARES}


@pytest.mark.parametrize('name, share', FLOPS_SHARES.items())
def test_reduced_configs_run_at_the_flops_they_say(name, share):
    # The least reduction at or under the share, as tools/sweep.py bisects.
    model = Config.fromfile(str(ROOT / 'configs' / name)).model.to_dict()
    flops = ShapeFlops(model)
    ratio = flops.gflops(model['backbone']['token_reduction']) / flops.dense
    assert share - 0.01 < ratio <= share + 0.001


@pytest.mark.parametrize('path', CONFIGS)
def test_config_parses_and_builds(path):
    cfg = Config.fromfile(str(ROOT / path))
    backbone = cfg.model.backbone
    assert backbone.type == 'TokenReductionVisionTransformer'
    assert 'mmtokred.plugin' in cfg.custom_imports['imports']
    if path.startswith(LOCAL):
        assert cfg.load_from is None or cfg.load_from.startswith(
            'work_dirs/proxy_')
    else:
        assert cfg.load_from.startswith('https://download.openmmlab.com/')
    reduction = backbone.get('token_reduction')
    assert (reduction is None) == path.endswith(DENSE)
    if reduction is not None:
        assert reduction.get('input') or reduction.get('blocks')
    # Built at its depth: a selected-block budget names blocks up to it.
    MODELS.build(backbone)
