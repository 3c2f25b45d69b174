"""Every registered reducer on both backbones (the VideoMAE one and a timm
DeiT with its class token): the tokens each block sees follow the plan,
every token's size counts the input patches it holds, no input patch is
held twice, the prefix holds only itself, and adaptive reducers count one
branch per input and reducing block. Runs in the timm environment, which
has mmaction too."""
import copy

import pytest
import timm
import torch

from conftest import SMALL_BACKBONE
from mmtokred.ops import keep_tokens
from mmtokred.reducers import REDUCERS
from mmtokred.timm import OFFICIAL_PPT, apply_token_reduction

#: One setting per registered reducer, valid on both small models (the
#: video one: 64 tokens, 4 blocks; the image one: 1 + 16 tokens, 4 blocks).
SETTINGS = {
    'NEPAM': dict(input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.5)),
    'PatchSimilarityPruning': dict(input=dict(type='PatchSimilarityPruning',
                                              ratio=0.3)),
    'ToMe': dict(blocks=dict(type='ToMe', r=3), proportional_attention=True),
    'PPT': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(4, 3),
                            threshold=1.)),
    'JMP': dict(blocks=dict(type='JMP', blocks=(1, 2), r=(4, 3))),
    'TokenPruning': dict(blocks=dict(type='TokenPruning', blocks=(1, 2),
                                     r=(4, 3))),
    'SimilarityPruning': dict(blocks=dict(type='SimilarityPruning',
                                          blocks=(1, 2), r=(4, 3))),
}
#: Image-only variants: the class token's importance, the official PPT.
IMAGE_SETTINGS = {
    'PPT official': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(4, 3),
                                     threshold=7e-5, **OFFICIAL_PPT)),
    'JMP class token': dict(blocks=dict(type='JMP', blocks=(1, 2), r=(4, 3),
                                        importance='class_token')),
    'TokenPruning class token': dict(blocks=dict(
        type='TokenPruning', blocks=(1, 2), r=(4, 3),
        importance='class_token', keep_mean='drop')),
}


def test_every_registered_reducer_has_a_setting():
    assert set(SETTINGS) == set(REDUCERS)


def video_model(reduction):
    from mmaction.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(dict(SMALL_BACKBONE, token_reduction=reduction))
    return model.eval(), torch.randn(2, 3, 8, 64, 64), 0


def image_model(reduction):
    torch.manual_seed(0)
    model = timm.create_model('deit_tiny_patch16_224', pretrained=False,
                              img_size=64, num_classes=5, depth=4).eval()
    x = torch.randn(2, 3, 64, 64)
    x[0, :, :32] = 0.2  # uniform patches: something to merge
    return apply_token_reduction(model, reduction), x, 1


def run(model, x):
    """The tokens entering each block, and the last block's state."""
    seen, last = [], {}
    hooks = [b.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[1]))
        for b in model.blocks]
    hooks.append(model.blocks[-1].register_forward_hook(
        lambda m, args, out: last.update(state=out[1])))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen, last['state']


@pytest.mark.parametrize('name, backbone', [
    *((name, backbone) for name in SETTINGS
      for backbone in ('video', 'image')),
    *((name, 'image') for name in IMAGE_SETTINGS),
])
def test_reducer_on_both_backbones(name, backbone):
    reduction = dict(copy.deepcopy({**SETTINGS, **IMAGE_SETTINGS}[name]),
                     track_source=True)
    model, x, prefix = (video_model if backbone == 'video' else
                        image_model)(reduction)
    grid = model.configured_grid if backbone == 'video' else (1, 4, 4)
    plan = model.token_reduction.plan(grid, len(model.blocks), prefix)
    seen, state = run(model, x)
    assert seen == plan.tokens
    assert seen[-1] < seen[0] or name in ('NEPAM', 'PatchSimilarityPruning')
    source, size = state.source, state.sizes_like(state.source)[..., 0]
    assert source.sum(1).max() <= 1  # no input patch held twice
    torch.testing.assert_close(size[:, prefix:],
                               source[:, prefix:].sum(-1).to(size.dtype))
    if prefix:
        torch.testing.assert_close(
            source[:, :prefix, :prefix],
            torch.eye(prefix).expand(source.shape[0], -1, -1))
        assert source[:, :prefix, prefix:].sum() == 0
    reducer = model.token_reduction.blocks
    if reducer is not None and set(reducer.branches) == {'pool', 'prune'}:
        assert sum(reducer.branch_counts().values()) == 2 * len(
            reducer.removals)


def test_class_token_importance_is_refused_without_a_class_token():
    with pytest.raises(ValueError, match='no class token'):
        video_model(IMAGE_SETTINGS['JMP class token'])


def test_a_new_reducer_is_one_registered_class(monkeypatch):
    """A reducer written once (a class and ``@register``) runs on both
    backbones, its budget planned and checked like the others'."""
    from mmtokred import reducers
    monkeypatch.setattr(reducers.registry, 'REDUCERS',
                        dict(reducers.REDUCERS))

    @reducers.register
    class DropLast(reducers.SelectedBlocksReducer):
        def patch_capacity(self, patches):
            return patches - 1

        def reduce(self, x, attn, state, block_index, r):
            patches, patch_state, join = self.without_prefix(x, state)
            kept = torch.arange(patches.shape[1] - r).expand(len(x), -1)
            return join(*keep_tokens(patches, patch_state, kept))

    setting = dict(blocks=dict(type='DropLast', blocks=(1, ), r=5),
                   track_source=True)
    for make, first in ((video_model, 64), (image_model, 17)):
        model, x, prefix = make(setting)
        seen, state = run(model, x)
        assert seen == [first, first, first - 5, first - 5]
        assert state.source.shape[1] == first - 5
        with pytest.raises(ValueError, match='can remove'):
            make(dict(blocks=dict(type='DropLast', blocks=(1, ), r=64)))
