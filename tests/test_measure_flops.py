"""FLOPs: the counter, and the closed form from shapes that must equal it."""
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIG
from mmengine.config import Config

from mmtokred.experiments.clips import recogniser
from mmtokred.experiments.recipes import METHODS, model_grid
from mmtokred.measure.flops import ShapeFlops, count_gflops
from mmtokred.measure.forward import forward_fn
from mmtokred.measure.observe import TokenRecorder
from mmtokred.ops.attention import key_bias_mode_set_to


def test_attention_is_counted():
    q = torch.randn(2, 3, 50, 16)
    # QK^T and AV: 2 * B * H * N * N * D multiply-accumulates.
    expected = 2 * 2 * 3 * 50 * 50 * 16 / 1e9
    fused = count_gflops(lambda: F.scaled_dot_product_attention(q, q, q))
    explicit = count_gflops(
        lambda: (q @ q.transpose(-2, -1)).softmax(-1) @ q)
    assert fused == pytest.approx(expected)
    assert explicit == pytest.approx(expected)


def test_linear_is_counted_in_multiply_accumulates():
    layer = torch.nn.Linear(8, 4, bias=False)
    assert count_gflops(lambda: layer(torch.randn(5, 8))) == \
        pytest.approx(5 * 8 * 4 / 1e9)


class Counted:
    """A config's recogniser (random weights) counted on one view both
    ways: by the counter as it runs, and from the shapes."""

    def __init__(self, cfg: Config) -> None:
        torch.manual_seed(0)
        self.model = recogniser(cfg, device='cpu')
        backbone = cfg.model.backbone
        view = torch.randn(1, 1, 3, backbone.num_frames, backbone.img_size,
                           backbone.img_size)
        self.forward = forward_fn(self.model, view, False)
        self.shapes = ShapeFlops(cfg.model)
        self.grid = model_grid(cfg)

    def check(self, reduction) -> None:
        self.model.backbone.set_token_reduction(reduction)
        # Equal, not close: the bisection compares both to a target.
        assert self.shapes.gflops(reduction) == count_gflops(self.forward), \
            reduction


def tiny(head_width: int) -> Config:
    """The tiny demo model (4 heads) with heads ``head_width`` wide: 24
    (a multiple of 8) and 20 (proportional attention pads its bias channel
    to 24 rather than to 32)."""
    cfg = Config.fromfile(str(TINY_CONFIG))
    cfg.model.backbone.embed_dims = 4 * head_width
    cfg.model.cls_head.in_channels = 4 * head_width
    return cfg


@pytest.fixture(scope='module', params=[24, 20])
def counted(request):
    return Counted(tiny(request.param))


@pytest.mark.parametrize('name', sorted(METHODS))
def test_the_closed_form_is_the_count_of_every_method(counted, name):
    """Every sweep method (every reducer type, the input stages, the
    combined ones) at no, some and the most reduction, and with
    proportional attention."""
    make = METHODS[name].make
    for knob in (0., 0.4, 1.):
        counted.check(make(knob, counted.grid))
    counted.check(dict(make(0.4, counted.grid), proportional_attention=True))


@pytest.mark.parametrize('mode', ['mask', 'channel'])
def test_the_closed_form_counts_the_key_bias_as_attention_adds_it(
        counted, mode):
    """A mask adds no channel to attention's products; the channel one
    padded to 8 (the closed form follows :func:`key_bias_mode`)."""
    reduction = dict(blocks=dict(type='ToMe', r=5),
                     proportional_attention=True)
    with key_bias_mode_set_to(mode):
        counted.check(reduction)
        gflops = counted.shapes.gflops(reduction)
    with key_bias_mode_set_to('mask' if mode == 'channel' else 'channel'):
        other = counted.shapes.gflops(reduction)
    assert (gflops < other) == (mode == 'mask')


@pytest.mark.parametrize('reduction', [
    None,
    dict(blocks=dict(type='ToMe', r=5, protected=1),
         proportional_attention=True),
    dict(blocks=dict(type='ToMe', r=[32, 0, 8, 4])),  # all it can, idle
    dict(input=dict(type='NEPAM', window=(2, 2, 2), num_windows=3,
                    distance='cosine', representative='avg',
                    position='average')),
    # No window merged, but tracked: the merging path, sizes of one.
    dict(input=dict(type='NEPAM', ratio=0.), track_source=True,
         proportional_attention=True),
    dict(input=dict(type='NEPAM', ratio=0.3),
         blocks=dict(type='TokenPruning', blocks=(1, ), r=6,
                     keep_mean='drop'), proportional_attention=True),
    dict(blocks=dict(type='TokenPruning', blocks=(1, 2), r=(10, 8),
                     keep_mean='drop'), proportional_attention=True),
    dict(blocks=dict(type='JMP', blocks=(1, 2), r=(40, 8),
                     importance='sharpness')),  # rounds of half the tokens
    dict(input=dict(type='PatchSimilarityPruning', ratio=0.3,
                    keep_mean='drop'), proportional_attention=True),
    dict(input=dict(type='NEPAM', window=(1, 1, 2), ratio=0.5),
         blocks=dict(type='SimilarityPruning', blocks=(0, 2), r=(5, 3),
                     keep_mean='drop'), proportional_attention=True),
], ids=lambda r: 'dense' if r is None else '+'.join(
    [r[s]['type'] for s in ('input', 'blocks') if s in r]
    + [k for k in ('proportional_attention', 'track_source') if k in r]))
def test_the_closed_form_is_the_count_of_every_option(counted, reduction):
    counted.check(reduction)


def test_each_reduction_is_counted_once():
    shapes = ShapeFlops(tiny(24).model)
    reduction = dict(blocks=dict(type='ToMe', r=[8, 8, 8, 8]))
    first = shapes.gflops(reduction)
    assert shapes.tokens(reduction) == [64, 56, 48, 40, 32]
    assert shapes.gflops(dict(reduction)) == first
    assert len(shapes.counted) == 2  # dense and ToMe


def test_a_reduction_whose_flops_depend_on_the_clip_is_refused():
    shapes = ShapeFlops(tiny(24).model)
    for adaptive in (dict(input=dict(type='NEPAM', ratio=None,
                                     threshold=0.5)),
                     dict(blocks=dict(type='ToMe', r=4, threshold=0.5))):
        assert shapes.depends_on_clips(adaptive)
        with pytest.raises(ValueError, match='depend on the clip'):
            shapes.gflops(adaptive)
    assert not shapes.depends_on_clips(dict(blocks=dict(type='ToMe', r=4)))
    with pytest.raises(ValueError, match='Lower r'):  # the backbone's check
        shapes.gflops(dict(blocks=dict(type='PPT', blocks=(1, ), r=63)))


@pytest.mark.parametrize('proportional', [False, True])
@pytest.mark.parametrize('reduction', [
    dict(input=dict(type='NEPAM', ratio=None, threshold=0.6)),
    dict(blocks=dict(type='ToMe', r=6, threshold=0.3)),
    dict(input=dict(type='NEPAM', ratio=None, threshold=0.6),
         blocks=dict(type='ToMe', r=4, threshold=0.3)),
])
def test_each_clips_closed_form_is_its_count(counted, reduction,
                                             proportional):
    """A clip-dependent reduction: each view's FLOPs from the tokens it
    kept (as the recorder records them) equal the counter's."""
    reduction = dict(reduction, proportional_attention=proportional)
    counted.model.backbone.set_token_reduction(reduction)
    backbone = counted.model.backbone
    generator = torch.Generator().manual_seed(3)
    for flat in (0., 0.5, 1.):  # a share of each frame flat and static
        view = torch.randn(1, 1, 3, backbone.num_frames, 64, 64,
                           generator=generator)
        view[..., :round(64 * flat), :] = 0.2
        forward = forward_fn(counted.model, view, False)
        with TokenRecorder(backbone) as recorder:
            forward()
        (tokens, ) = recorder.tokens_of_clips()
        assert counted.shapes.clip_gflops(reduction, tokens) == \
            pytest.approx(count_gflops(forward), rel=1e-12), tokens
