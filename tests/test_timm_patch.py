"""mmtokred.timm on timm's image ViTs: exact when off, the papers' rules
when on: ToMe against a copy written from the paper; NEPAM and PPT against
the lines of their official code (cited per function, not vendored)."""
import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import OneDevice
from mmtokred.timm import OFFICIAL_PPT, PAPER_SETTINGS, apply_token_reduction

SMALL = dict(img_size=64, num_classes=5)


def build(name='deit_tiny_patch16_224', **kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False,
                             **{**SMALL, **kwargs}).eval()


def images(batch=3, size=64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    x[0, :, :32] = 0.2  # a flat region: uniform windows
    return x


def patched(model, reduction):
    return apply_token_reduction(copy.deepcopy(model), reduction)


@pytest.mark.parametrize('name, kwargs', [
    ('deit_tiny_patch16_224', {}),
    ('deit_tiny_distilled_patch16_224', {}),
    ('vit_tiny_patch16_224', dict(reg_tokens=4)),
    ('vit_tiny_patch16_224', dict(class_token=False, global_pool='avg')),
    ('deit3_small_patch16_224', {}),  # no_embed_class, layer scale
])
def test_reduction_off_equals_timm(name, kwargs):
    model = build(name, **kwargs)
    x = images()
    with torch.no_grad():
        assert torch.equal(patched(model, None)(x), model(x))


# --- ToMe: a copy written from the paper (Bolya et al., ICLR 2023, sec. 3)
def reference_tome(model, x, r, prefix):
    """ToMe on a timm ViT: per block, after attention with log(size) added
    to the keys' logits, tokens alternate into A and B; each A token's edge
    goes to its most similar B token (cosine of the keys averaged over
    heads); the r strongest edges merge (size-weighted mean). The protected
    prefix never leaves A; kept A tokens stay in order, then B."""
    x = model._pos_embed(model.patch_embed(x))
    x = model.norm_pre(model.patch_drop(x))
    size = torch.ones(x.shape[0], x.shape[1], 1)
    for block in model.blocks:
        attn = block.attn
        y = block.norm1(x)
        B, N, C = y.shape
        qkv = attn.qkv(y).reshape(B, N, 3, attn.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-2, -1) * attn.scale + size.log()[:, None,
                                                                   None, :, 0]
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        x = x + block.ls1(attn.proj(out))
        keys = F.normalize(k.mean(1), dim=-1)
        merged_x, merged_size = [], []
        for b in range(B):
            a_idx, b_idx = list(range(0, N, 2)), list(range(1, N, 2))
            sim = keys[b, a_idx] @ keys[b, b_idx].T
            for i, token in enumerate(a_idx):
                if token < prefix:
                    sim[i] = -math.inf
            for j, token in enumerate(b_idx):
                if token < prefix:
                    sim[:, j] = -math.inf
            best, partner = sim.max(-1)
            leaving = set(best.argsort(descending=True)[:r].tolist())
            total = {j: x[b, t] * size[b, t] for j, t in enumerate(b_idx)}
            weight = {j: size[b, t].clone() for j, t in enumerate(b_idx)}
            for i in leaving:
                j = int(partner[i])
                total[j] = total[j] + x[b, a_idx[i]] * size[b, a_idx[i]]
                weight[j] = weight[j] + size[b, a_idx[i]]
            kept_a = [t for i, t in enumerate(a_idx) if i not in leaving]
            prefix_b = [j for j, t in enumerate(b_idx) if t < prefix]
            order = ([('a', t) for t in kept_a if t < prefix]
                     + [('b', j) for j in prefix_b]
                     + [('a', t) for t in kept_a if t >= prefix]
                     + [('b', j) for j in range(len(b_idx))
                        if j not in prefix_b])
            merged_x.append(torch.stack([
                x[b, t] if kind == 'a' else total[t] / weight[t]
                for kind, t in order]))
            merged_size.append(torch.stack([
                size[b, t] if kind == 'a' else weight[t]
                for kind, t in order]))
        x, size = torch.stack(merged_x), torch.stack(merged_size)
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), size


@pytest.mark.parametrize('name', ['deit_tiny_patch16_224',
                                  'deit_tiny_distilled_patch16_224'])
def test_tome_merges_as_the_paper_says(name):
    model = build(name, depth=4)
    x = images()
    ours = patched(model, dict(blocks=dict(type='ToMe', r=3),
                               proportional_attention=True))
    with torch.no_grad():
        expected, expected_size = reference_tome(model, x, 3,
                                                 model.num_prefix_tokens)
        tokens, state = ours.forward_tokens(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
    assert tokens.shape[1] == 16 + model.num_prefix_tokens - 3 * 4
    torch.testing.assert_close(state.size, expected_size)


# --- NEPAM: the official selection (JackJiang2018/NEPAM at 2957725,
# model_nepam.py, class NepamAblation) -------------------------------------
def reference_nepam(model, x, windows_merged, distance):
    """Windows of 1x2 patches of pixels. ``forward``: each patch's distance
    to the window's top-left patch (``SelectRef``) averaged over the window
    (``F.avg_pool2d``, the reference's own distance included); 'l1' is
    ``P1NormDist`` ``(in1 - in2).abs().mean(dim=1)``, 'cosine' is
    ``CosSim`` ``-F.cosine_similarity(in1, in2, 1)`` ("turn similarity into
    distance"). ``SortIndex``: ``torch.argsort(score, stable=True)``, the
    first ``merge_group_num`` windows merged; ``SelectToken`` (keep1,
    ``token_pos 0 1``) keeps only the second patch of each."""
    p = model.patch_embed.proj.kernel_size[0]
    B = x.shape[0]
    patches = x.unfold(2, p, p).unfold(3, p, p)  # B C H' W' p p
    grid_h, grid_w = patches.shape[2:4]
    pixels = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, grid_h, grid_w, -1)
    first, second = pixels[:, :, 0::2], pixels[:, :, 1::2]
    if distance == 'cosine':
        to_first = -F.cosine_similarity(first, first, dim=-1)
        to_second = -F.cosine_similarity(first, second, dim=-1)
    else:
        to_first = (first - first).abs().mean(-1)
        to_second = (first - second).abs().mean(-1)
    score = (to_first + to_second) / 2
    order = score.flatten(1).argsort(dim=1, stable=True)
    outputs = []
    for b in range(B):
        keep = torch.ones(grid_h * grid_w, dtype=torch.bool)
        for w in order[b, :windows_merged].tolist():
            row, col = divmod(w, grid_w // 2)
            keep[row * grid_w + 2 * col] = False  # the first patch goes
        index = keep.nonzero()[:, 0]
        embedded = model.patch_embed(x[b:b + 1])[:, index]
        pos = model.pos_embed
        tokens = torch.cat([model.cls_token + pos[:, :1],
                            embedded + pos[:, 1:][:, index]], 1)
        outputs.append(model.forward_head(
            model.norm(model.blocks(model.norm_pre(tokens)))))
    return torch.cat(outputs)


@pytest.mark.parametrize('distance', ['cosine', 'l1'])
def test_nepam_selects_as_the_official_code(distance):
    model = build()
    x = images()
    ours = patched(model, dict(input=dict(type='NEPAM', window=(1, 2),
                                          num_windows=3, distance=distance,
                                          keep=1)))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference_nepam(
            model, x, 3, distance), rtol=1e-4, atol=1e-4)


def test_deit_s_nepam_setting_merges_39_of_98_windows():
    model = timm.create_model('deit_small_patch16_224', pretrained=False,
                              num_classes=3, depth=1).eval()
    ours = patched(model, 'nepam-deit-s')
    with torch.no_grad():
        tokens, state = ours.forward_tokens(torch.randn(1, 3, 224, 224))
    assert tokens.shape[1] == 1 + 196 - 39
    assert int((state.size[0, 1:, 0] == 2).sum()) == 39


# --- PPT: the official code (xjwu1024/PPT at 706bcdd: ppt_deit.py, tome.py)
def official_bipartite_soft_matching(metric, r):
    """tome.py ``bipartite_soft_matching`` (class_token=True, no distill
    token), line by line."""
    protected = 1
    t = metric.shape[1]
    r = min(r, (t - protected) // 2)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    scores[..., 0, :] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx = edge_idx[..., r:, :]
    src_idx = edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x, mode='mean'):
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src,
                                 reduce=mode)
        return torch.cat([unm, dst], dim=1)

    return merge


def official_merge_wavg(merge, x, size):
    """tome.py ``merge_wavg``."""
    x = merge(x * size, mode='sum')
    size = merge(size, mode='sum')
    return x / size, size


def official_ppt(model, image, pp_loc_list, r_tokens, threshold):
    """One image through DeiT patched as ppt_deit.py ``apply_patch`` does
    (proportional attention on, main.py ``--prop_attn`` store_false).

    ``PPTAttention.forward``: logits + ``size.log()``, softmax; its
    ``score_assignment_step``: ``attn[:, :, 0].sum(dim=1)`` times the norm
    of ``v.transpose(1, 2).reshape(B, T, C)``, the class token left out,
    normalised, then 2 for the class token. ``pp_block_adaptive.forward``:
    ``r = min(r, (x.shape[1] - 1) // 2)`` first, then ``torch.var`` of the
    patch scores against ``threshold``: pool (one ``bipartite_soft_matching``
    over all tokens + ``merge_wavg``) or prune (``torch.sort`` descending,
    ``sorted_indices[:, :-r]`` kept in that order, sizes gathered).
    Returns the logits, the sizes and the branch of each reducing block."""
    x = model._pos_embed(model.patch_embed(image))
    x = model.norm_pre(x)
    size = torch.ones(1, x.shape[1], 1)
    branches = []
    for index, block in enumerate(model.blocks):
        attn = block.attn
        y = block.norm1(x)
        B, N, C = y.shape
        qkv = attn.qkv(y).reshape(B, N, 3, attn.num_heads, C // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1)) * attn.scale
        weights = (weights + size.log()[:, None, None, :, 0]).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, N, C)
        x = x + block.ls1(attn.proj(out))
        if index in pp_loc_list:
            v_norm = torch.linalg.norm(
                v.transpose(1, 2).reshape(B, N, C), ord=2, dim=2)
            score = (weights[:, :, 0].sum(dim=1) * v_norm)[:, 1:]
            score = score / score.sum(dim=1, keepdim=True)
            scores = torch.cat([2 * torch.ones(B, 1), score], dim=-1)
            r = min(r_tokens, (x.shape[1] - 1) // 2)
            if torch.var(scores[:, 1:], dim=1) < threshold:
                merge = official_bipartite_soft_matching(k.mean(1), r)
                x, size = official_merge_wavg(merge, x, size)
                branches.append('pool')
            else:
                _, sorted_indices = torch.sort(scores, descending=True,
                                               dim=-1)
                kept = sorted_indices[:, :-r]
                x, size = x[:, kept[0]], size[:, kept[0]]
                branches.append('prune')
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), size, branches


@pytest.mark.parametrize('threshold', ['prune', 'pool', 'mixed'])
def test_ppt_runs_as_the_official_code(threshold):
    """Blocks 1 and 2 of a 17-token DeiT asking for 6 each: the official
    clamp gives 6 then (11 - 1) // 2 = 5 in either branch."""
    model = build(depth=4)
    x = images()
    if threshold == 'mixed':  # between the images' variances at block 1
        variances = sorted(official_variance(model, x[i:i + 1])
                           for i in range(3))
        # Halfway between two images' variances, not at one of them: there
        # the branch turns on the last bit, which kernels round otherwise.
        threshold = (variances[0] + variances[1]) / 2
    threshold = {'prune': 0., 'pool': math.inf}.get(threshold, threshold)
    ours = patched(model, dict(blocks=dict(type='PPT', blocks=[1, 2],
                                           r=[6, 5], threshold=threshold,
                                           **OFFICIAL_PPT),
                               proportional_attention=True))
    with torch.no_grad():
        got = ours(x)
        _, state = ours.forward_tokens(x)
        expected = [official_ppt(model, x[i:i + 1], [1, 2], 6, threshold)
                    for i in range(3)]
    assert state.size.shape[1] == 17 - 6 - 5
    torch.testing.assert_close(got, torch.cat([e[0] for e in expected]),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state.size.float(),
                               torch.cat([e[1] for e in expected]))
    if threshold not in (0., math.inf):
        assert len({e[2][0] for e in expected}) == 2  # both branches ran


def official_variance(model, image):
    """``torch.var(scores[:, 1:])`` of block 1 in :func:`official_ppt`."""
    probe = copy.deepcopy(model)
    probe.blocks = probe.blocks[:2]
    with torch.no_grad():
        x = probe.norm_pre(probe._pos_embed(probe.patch_embed(image)))
        x = probe.blocks[0](x)
        attn = probe.blocks[1].attn
        y = probe.blocks[1].norm1(x)
        B, N, C = y.shape
        qkv = attn.qkv(y).reshape(B, N, 3, attn.num_heads, C // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
        v_norm = v.transpose(1, 2).reshape(B, N, C).norm(dim=2)
        score = (weights[:, :, 0].sum(dim=1) * v_norm)[:, 1:]
        return float(torch.var(score / score.sum(dim=1, keepdim=True), dim=1))


def test_deit_s_ppt_setting_keeps_the_official_token_counts():
    """PPT's README setting on DeiT-S: 197 -> 147 -> 97 -> 49 (the official
    clamp, block 9 removes 48)."""
    model = timm.create_model('deit_small_patch16_224', pretrained=False,
                              num_classes=3).eval()
    ours = patched(model, 'ppt-deit-s')
    counts = []
    for block in ours.blocks:
        block.register_forward_hook(
            lambda module, args, out: counts.append(out[0].shape[1]))
    with torch.no_grad():
        ours.forward_tokens(torch.randn(1, 3, 224, 224))
    assert counts[3] == 147 and counts[6] == 97 and counts[9] == 49


def test_paper_settings_run_and_reduce_flops_on_deit_s():
    model = timm.create_model('deit_small_patch16_224', pretrained=False,
                              num_classes=3).eval()
    x = torch.randn(1, 3, 224, 224)
    for name in ('ppt-deit-s', 'jmp-deit-s', 'patchsim-deit-s',
                 'nepam-deit-s'):
        ours = patched(model, name)
        with torch.no_grad():
            tokens, state = ours.forward_tokens(x)
            assert torch.isfinite(ours(x)).all()
        assert tokens.shape[1] < 197, name
    assert set(PAPER_SETTINGS) >= {'ppt-deit-s', 'nepam-deit-s',
                                   'nepam-vit-b16-384', 'jmp-deit-s',
                                   'patchsim-deit-s'}


#: Every reducer of the patch, on 4-block tiny models.
REDUCTIONS = [
    dict(blocks=dict(type='ToMe', r=3)),
    dict(blocks=dict(type='PPT', blocks=[0, 2], r=4)),
    dict(blocks=dict(type='PPT', blocks=[0, 2], r=4, **OFFICIAL_PPT)),
    dict(blocks=dict(type='JMP', blocks=[0, 2], r=4)),
    dict(blocks=dict(type='JMP', blocks=[0, 2], r=4,
                     importance='class_token')),
    dict(blocks=dict(type='TokenPruning', blocks=[0, 2], r=4,
                     keep_mean='fuse')),
    dict(blocks=dict(type='SimilarityPruning', blocks=[0, 2], r=4)),
    dict(input=dict(type='NEPAM', window=(2, 2), ratio=0.5)),
    dict(input=dict(type='PatchSimilarityPruning', ratio=0.25)),
]


@pytest.mark.parametrize('reduction', REDUCTIONS)
@pytest.mark.parametrize('name, kwargs', [
    ('deit_tiny_patch16_224', {}),
    ('deit_tiny_distilled_patch16_224', {}),
    ('vit_tiny_patch16_224', dict(reg_tokens=3)),
])
def test_prefix_tokens_are_never_merged_or_pruned(name, kwargs, reduction):
    model = build(name, depth=4, **kwargs)
    ours = patched(model, dict(reduction, track_source=True))
    prefix = model.num_prefix_tokens
    with torch.no_grad():
        _, state = ours.forward_tokens(images())
    source = state.source
    # Each prefix token holds itself only, where it started.
    torch.testing.assert_close(
        source[:, :prefix, :prefix],
        torch.eye(prefix).expand(source.shape[0], -1, -1))
    assert source[:, :prefix, prefix:].sum() == 0
    assert source[:, prefix:, :prefix].sum() == 0


@pytest.mark.parametrize('name, kwargs, reduction', [
    *[('deit_tiny_distilled_patch16_224', {}, r) for r in REDUCTIONS],
    # Average pooling weighted by size; the class token's importance needs
    # a class token.
    *[('vit_tiny_patch16_224', dict(class_token=False, global_pool='avg'), r)
      for r in REDUCTIONS
      if r.get('blocks', {}).get('importance') != 'class_token'],
])
def test_every_reducer_keeps_to_the_model_device(name, kwargs, reduction):
    # On the meta device, as tests/test_backbone_device_placement.py runs
    # the video reducers: a tensor made on the host inside forward is
    # refused.
    model = patched(build(name, depth=4, **kwargs), reduction).to('meta')
    with torch.no_grad(), OneDevice():
        out = model(torch.empty(2, 3, 64, 64, device='meta'))
    assert out.device.type == 'meta' and out.shape == (2, 5)


def test_bf16_outputs_are_finite():
    model = build().to(torch.bfloat16)
    for name in ('ppt-deit-s', 'jmp-deit-s'):
        setting = copy.deepcopy(PAPER_SETTINGS[name])
        setting['blocks'].update(blocks=[1, 2], r=3)
        with torch.no_grad():
            out = patched(model, setting)(images().to(torch.bfloat16))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('reduction, match', [
    (dict(blocks=dict(type='ToMe', r=100)), 'block 0 sees 17 tokens'),
    (dict(blocks=dict(type='PPT', blocks=[1], r=20)), 'can remove 14'),
    (dict(blocks=dict(type='Nope')), 'token_reduction.blocks'),
    (dict(input=dict(type='NEPAM', window=(1, 8), num_windows=1)),
     'window'),
    (dict(input=dict(type='NEPAM', window=(1, 2), num_windows=9)),
     'num_windows=9'),
    (dict(blocks=dict(type='ToMe', r=1.5)), 'ToMe r'),
    ('ppt', 'token_reduction must be one of'),
    (dict(blocks=dict(type='ToMe', r=2, threshold=0.5), packed=False),
     'which run packed'),
])
def test_bad_options_are_refused_at_patch_time(reduction, match):
    with pytest.raises(ValueError, match=match):
        apply_token_reduction(build(), reduction)


def test_ppt_needs_a_class_token():
    with pytest.raises(ValueError, match='no class token'):
        apply_token_reduction(
            build('vit_tiny_patch16_224', class_token=False,
                  global_pool='avg'),
            dict(blocks=dict(type='PPT', blocks=[1], r=2, **OFFICIAL_PPT)))


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.parametrize('kwargs', [
    {}, dict(class_token=False, global_pool='avg'), dict(reg_tokens=2)])
@pytest.mark.parametrize('blocks', [None, dict(type='ToMe', r=2)])
def test_nepam_threshold_pads_and_each_image_is_as_alone(kwargs, blocks,
                                                         packed):
    """NEPAM's threshold mode keeps a token count per image: the batch is
    packed, or padded (size 0, masked in attention, left out of the
    pooling), and each image's output is the one it gets alone."""
    model = build('vit_tiny_patch16_224', depth=4, **kwargs)
    reduction = dict(input=dict(type='NEPAM', window=(1, 2), threshold=0.3),
                     packed=packed)
    if blocks is not None:
        reduction['blocks'] = blocks
    ours = patched(model, reduction)
    x = images()
    x[2, :, :48] = -0.3  # three images, three amounts of uniformity
    with torch.no_grad():
        batch = ours(x)
        alone = torch.cat([ours(x[i:i + 1]) for i in range(3)])
        _, state = ours.forward_tokens(x)
    if packed:
        assert len(set(state.lengths)) == 3, state.lengths
    else:
        kept = (state.size[..., 0] > 0).sum(1)
        assert state.padded and len(set(kept.tolist())) == 3, kept
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
