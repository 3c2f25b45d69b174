"""Every config under configs/: it parses, imports the plugin, names the
official weights where it inherits an official base, asks for the token
reduction its name says, and its backbone builds (the budget planned on
its configured clips). The timm TSN configs need timm: they are built in
the timm environment (tests/test_timm_backbone.py)."""
import pytest
from mmaction.registry import MODELS
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob(
    '*.py') if not p.name.startswith('tsn_timm_'))
#: Trained here from scratch or randomly initialised: no official weights.
LOCAL = ('configs/demo/', 'configs/proxy/')


def test_the_configs_are_found():
    assert len(CONFIGS) == 21
    assert len([c for c in CONFIGS if c.endswith('videomae_dense.py')]) == 4


@pytest.mark.parametrize('path', CONFIGS)
def test_config_parses_and_builds(path):
    cfg = Config.fromfile(str(ROOT / path))
    backbone = cfg.model.backbone
    assert backbone.type == 'TokenReductionVisionTransformer'
    assert 'mmtokred.plugin' in cfg.custom_imports['imports']
    if path.startswith(LOCAL):
        assert cfg.load_from is None
    else:
        assert cfg.load_from.startswith('https://download.openmmlab.com/')
    reduction = backbone.get('token_reduction')
    assert (reduction is None) == path.endswith('_dense.py')
    if reduction is not None:
        assert reduction.get('input') or reduction.get('blocks')
    # Built at its depth: a selected-block budget names blocks up to it.
    MODELS.build(backbone)
