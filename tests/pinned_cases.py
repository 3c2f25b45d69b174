"""Every reducer on both backbones, on fixed weights and inputs, through the
public config API only (``token_reduction`` dicts): the outputs pinned by
tests/test_reducers_pinned.py and tests/test_timm_reducers_pinned.py.

Weights and inputs are drawn from seeded generators, not from the models'
own initialisers, so they do not move with timm or mmaction versions. The
cases run in float64, where a change of kernel (another CPU) moves the
scores by about 1e-16 and no ranking of tokens flips; exact equality is
asked of the machine kind that wrote the file (:func:`machine`).

``python tests/pinned_cases.py {video,timm} OUT`` writes the file (JSON,
the float64 outputs as exact hex strings).
"""
import copy
import functools
import json
import platform
import sys
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor, nn

PINNED = Path(__file__).resolve().parent / 'data'

VIDEO_BACKBONE = dict(type='TokenReductionVisionTransformer', img_size=64,
                      patch_size=16, embed_dims=48, depth=4, num_heads=4,
                      num_frames=8)

VIDEO_CASES: Dict[str, Dict] = {
    'nepam_ratio': dict(input=dict(type='NEPAM', ratio=0.5)),
    'nepam_num_windows_tracked': dict(
        input=dict(type='NEPAM', window=(2, 2, 2), num_windows=3,
                   distance='cosine', representative='avg',
                   position='average'), track_source=True),
    # The padded path; the packed one equals each clip alone
    # (tests/test_packed.py).
    'nepam_threshold': dict(input=dict(type='NEPAM', window=(1, 2, 2),
                                       threshold=0.6), packed=False),
    'nepam_threshold_tome': dict(input=dict(type='NEPAM', window=(1, 2, 2),
                                            threshold=0.6),
                                 blocks=dict(type='ToMe', r=4),
                                 packed=False),
    'patch_similarity': dict(input=dict(type='PatchSimilarityPruning',
                                        ratio=0.4)),
    'patch_similarity_plain_drop': dict(input=dict(
        type='PatchSimilarityPruning', ratio=0.3, threshold=None,
        keep_mean='drop'), track_source=True),
    'tome': dict(blocks=dict(type='ToMe', r=6)),
    'tome_decreasing_protected': dict(blocks=dict(
        type='ToMe', r=5, schedule='decreasing', protected=1)),
    'nepam_tome_proportional_tracked': dict(
        input=dict(type='NEPAM', ratio=0.3), blocks=dict(type='ToMe', r=4),
        proportional_attention=True, track_source=True),
    'ppt': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(10, 8))),
    'ppt_pool': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(40, 10),
                                 threshold=float('inf'))),
    'ppt_prune_drop': dict(blocks=dict(type='PPT', blocks=(1, 2), r=10,
                                       threshold=0., keep_mean='drop')),
    'ppt_paper_rule': dict(blocks=dict(type='PPT', blocks=(1, 2), r=10,
                                       rule='paper', threshold=7e-5)),
    'jmp': dict(blocks=dict(type='JMP', blocks=(1, 2), r=(10, 8))),
    'jmp_rounds_tracked': dict(blocks=dict(type='JMP', blocks=(1, ), r=40,
                                           threshold=0.2),
                               track_source=True),
    **{f'token_pruning_{importance}': dict(blocks=dict(
        type='TokenPruning', blocks=(1, 2), r=10, importance=importance))
       for importance in ('random', 'received', 'pooled_query', 'norm',
                          'sharpness')},
    'token_pruning_fuse': dict(blocks=dict(type='TokenPruning', blocks=(1, ),
                                           r=10, keep_mean='fuse')),
    'token_pruning_drop': dict(blocks=dict(type='TokenPruning', blocks=(2, ),
                                           r=12, keep_mean='drop')),
    'similarity_pruning': dict(blocks=dict(type='SimilarityPruning',
                                           blocks=(1, 2), r=10)),
    'nepam_jmp_tracked': dict(input=dict(type='NEPAM', ratio=0.5),
                              blocks=dict(type='JMP', blocks=(1, ), r=10),
                              track_source=True),
}

#: (timm model, its options): class token; class and distillation tokens;
#: registers; no prefix at all (average pooling).
TIMM_MODELS = {
    'deit_s': ('deit_small_patch16_224', dict(num_classes=32)),
    'deit_t_distilled': ('deit_tiny_distilled_patch16_224',
                         dict(num_classes=32)),
    'vit_t_registers': ('vit_tiny_patch16_224',
                        dict(num_classes=32, reg_tokens=4)),
    'vit_t_avg': ('vit_tiny_patch16_224',
                  dict(num_classes=32, class_token=False,
                       global_pool='avg')),
}

#: What the image PPT did before it became the video one with options:
#: the official code's choices (mmtokred.timm.OFFICIAL_PPT).
IMAGE_PPT = dict(importance='class_token', rule='paper', keep_mean='drop',
                 kept_order='importance')

TIMM_CASES: Dict[str, tuple] = {
    **{f'{setting}@deit_s': ('deit_s', setting) for setting in (
        'ppt-deit-s', 'nepam-deit-s', 'nepam-vit-b16-384', 'jmp-deit-s',
        'patchsim-deit-s')},
    'ppt_pool@deit_s': ('deit_s', dict(blocks=dict(
        type='PPT', blocks=(3, 6, 9), r=(50, 50, 48), threshold=1.,
        **IMAGE_PPT))),
    'ppt_prune_tracked@deit_s': ('deit_s', dict(blocks=dict(
        type='PPT', blocks=(3, 6, 9), r=(50, 50, 48), threshold=0.,
        **IMAGE_PPT), track_source=True)),
    'nepam_tracked@deit_s': ('deit_s', dict(input=dict(
        type='NEPAM', window=(2, 2), ratio=0.5, keep=3,
        representative='avg', position='average'), track_source=True)),
    'nepam_ppt@deit_s': ('deit_s', dict(
        input=dict(type='NEPAM', window=(1, 2), num_windows=39,
                   distance='l2'),
        blocks=dict(type='PPT', blocks=(3, 6, 9), r=(40, 40, 30),
                    threshold=7e-5, **IMAGE_PPT),
        proportional_attention=True)),
    'patchsim_drop_tracked@deit_s': ('deit_s', dict(input=dict(
        type='PatchSimilarityPruning', ratio=0.3, threshold=None,
        keep_mean='drop'), track_source=True)),
    **{f'{name}@{model}': (model, reduction)
       for model in ('deit_t_distilled', 'vit_t_registers', 'vit_t_avg')
       for name, reduction in (
           ('tome', dict(blocks=dict(type='ToMe', r=8))),
           ('tome_proportional_tracked', dict(
               blocks=dict(type='ToMe', r=[16] * 4 + [4] * 8),
               proportional_attention=True, track_source=True)),
           ('nepam', dict(input=dict(type='NEPAM', window=(1, 2),
                                     ratio=0.4))),
           ('patchsim', dict(input=dict(type='PatchSimilarityPruning',
                                        ratio=0.3))),
       )},
    **{f'jmp@{model}': (model, dict(blocks=dict(
        type='JMP', blocks=(3, 6, 9), r=40, threshold=0.3,
        importance='class_token'), track_source=True))
       for model in ('deit_t_distilled', 'vit_t_registers')},
    'ppt@vit_t_registers': ('vit_t_registers', dict(blocks=dict(
        type='PPT', blocks=(3, 6, 9), r=(50, 50, 48), threshold=7e-5,
        **IMAGE_PPT))),
}


def machine() -> str:
    """The kind of machine whose kernels gave the pinned bits: torch's
    version, its CPU capability and the CPU's vendor and matrix units."""
    flags, vendor = set(), platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            key, _, value = line.partition(':')
            if key.strip() == 'vendor_id':
                vendor = value.strip()
            elif key.strip() == 'flags':
                flags = set(value.split())
                break
    except OSError:
        pass
    units = '+'.join(sorted(f for f in flags if f.startswith('amx'))) or \
        'no-amx'
    return (f'torch {torch.__version__}, '
            f'{torch.backends.cpu.get_cpu_capability()}, {vendor}, {units}')


def seeded_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter and buffer of floating dtype with draws of
    one seeded generator (norm gains near 1, the rest small), in float64."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
            if not tensor.is_floating_point():
                continue
            draw = torch.randn(tensor.shape, generator=generator,
                               dtype=torch.float64)
            gain = name.endswith('weight') and tensor.dim() == 1
            tensor.copy_(1 + 0.1 * draw if gain else 0.05 * draw)
    return model


def video_clips() -> Tensor:
    """Two clips (2, 3, 8, 64, 64): noise with flat and repeated regions, so
    windows and tokens differ in how alike they are."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 64, 64, generator=generator,
                    dtype=torch.float64)
    x[0, :, :, :32] = 0.3  # a flat half
    x[1, :, 4:] = x[1, :, :4]  # a still second half
    x[1, :, :, 16:48, 16:48] = -0.5
    return x


def timm_images() -> Tensor:
    """Three images (3, 3, 224, 224) with flat, repeated and noisy parts."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 224, 224, generator=generator,
                    dtype=torch.float64)
    x[0, :, :112] = 0.2
    x[1, :, :, 112:] = x[1, :, :, :112]
    x[2] = x[2].cumsum(-1) / 40  # smooth gradients
    return x


def owners(source: Tensor) -> Tensor:
    """``(B, N0)`` index of the token holding each input token of a source
    map ``(B, N, N0)`` (-1: pruned), int16; checks that one token holds
    each."""
    held = source != 0
    assert held.sum(1).max() <= 1, 'an input token held twice'
    return torch.where(held.any(1), held.float().argmax(1), -1).short()


class _LastState:
    """Keeps the state the last block returns (its source map)."""

    def __init__(self, block: nn.Module) -> None:
        self.source: Optional[Tensor] = None
        self.handle = block.register_forward_hook(self)

    def __call__(self, module, args, output) -> None:
        self.source = output[1].source


def video_outputs(case: str) -> Dict[str, Tensor]:
    """The backbone's features of :func:`video_clips` under ``case``, and
    the owner of each input tubelet after the last block where the case
    tracks sources."""
    from mmaction.registry import MODELS
    reduction = VIDEO_CASES[case]
    model = seeded_weights(MODELS.build(dict(VIDEO_BACKBONE,
                                             token_reduction=reduction)))
    hook = _LastState(model.blocks[-1])
    with torch.no_grad():
        out = {'output': model(video_clips())}
    hook.handle.remove()
    if reduction.get('track_source'):
        out['owner'] = owners(hook.source)
    return out


@functools.lru_cache(maxsize=None)
def _timm_model(key: str) -> nn.Module:
    import timm
    name, options = TIMM_MODELS[key]
    return seeded_weights(timm.create_model(name, pretrained=False,
                                            **options))


def timm_outputs(case: str) -> Dict[str, Tensor]:
    """The logits of :func:`timm_images` under ``case``, and the owner of
    each input patch among the final tokens where the case tracks sources."""
    from mmtokred.timm import apply_token_reduction
    model_key, reduction = TIMM_CASES[case]
    model = apply_token_reduction(copy.deepcopy(_timm_model(model_key)),
                                  reduction)
    images = timm_images()
    with torch.no_grad():
        out = {'output': model(images)}
        if isinstance(reduction, dict) and reduction.get('track_source'):
            out['owner'] = owners(model.forward_tokens(images)[1].source)
    return out


def _to_text(outputs: Dict[str, Tensor]) -> Dict:
    """A case's outputs as JSON: float64 values as exact hex strings."""
    text = {'output': dict(shape=list(outputs['output'].shape),
                           hex=[v.hex() for v in
                                outputs['output'].flatten().tolist()])}
    if 'owner' in outputs:
        text['owner'] = dict(shape=list(outputs['owner'].shape),
                             values=outputs['owner'].flatten().tolist())
    return text


def _from_text(text: Dict) -> Dict[str, Tensor]:
    outputs = {'output': torch.tensor(
        [float.fromhex(v) for v in text['output']['hex']],
        dtype=torch.float64).reshape(text['output']['shape'])}
    if 'owner' in text:
        outputs['owner'] = torch.tensor(
            text['owner']['values'],
            dtype=torch.int16).reshape(text['owner']['shape'])
    return outputs


def load(kind: str) -> Dict:
    """The pinned file of ``kind`` ('video' or 'timm')."""
    pinned = json.loads((PINNED / f'pinned_{kind}.json').read_text())
    return {'machine': pinned['machine'],
            'cases': {case: _from_text(text)
                      for case, text in pinned['cases'].items()}}


def assert_pinned(actual: Dict[str, Tensor], pinned: Dict,
                  case: str) -> None:
    """``actual`` equals the pinned outputs of ``case``: bit for bit on the
    machine kind that wrote them; elsewhere the token owners exactly and the
    outputs to 1e-9 (float64: other kernels, the same decisions)."""
    expected = pinned['cases'][case]
    assert sorted(actual) == sorted(expected), case
    if 'owner' in expected:
        assert torch.equal(actual['owner'], expected['owner']), case
    if pinned['machine'] == machine():
        assert torch.equal(actual['output'], expected['output']), (
            f'{case}: max difference '
            f"{(actual['output'] - expected['output']).abs().max():.3g}")
    else:
        torch.testing.assert_close(actual['output'], expected['output'],
                                   rtol=1e-9, atol=1e-9, msg=case)


def write(kind: str, path: str) -> None:
    import mmtokred.plugin  # noqa: F401  (registers the modules)
    if kind == 'video':
        from mmaction.utils import register_all_modules
        register_all_modules()
        cases, run = VIDEO_CASES, video_outputs
    else:
        cases, run = TIMM_CASES, timm_outputs
    pinned = {'machine': machine(),
              'cases': {case: _to_text(run(case)) for case in cases}}
    Path(path).write_text(json.dumps(pinned, indent=0, sort_keys=True)
                          + '\n')


if __name__ == '__main__':
    write(*sys.argv[1:3])
