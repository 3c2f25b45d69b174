"""Token reduction for timm's image ViTs, patched in ToMe's manner.

:func:`apply_token_reduction`
turns a timm ``VisionTransformer`` (ViT, DeiT, DeiT distilled, with register
tokens or not) into one whose blocks and input can reduce tokens, reusing
:mod:`mmtokred.ops`. The prefix tokens (class, distillation, registers) are
never merged or pruned. With ``token_reduction=None`` the outputs equal
timm's on the same weights.

``token_reduction`` takes the keys of the VideoMAE backbone's
(``input``, ``blocks``, ``proportional_attention``, ``track_source``), with
the reducers of :data:`INPUT_REDUCERS` and :data:`BLOCK_REDUCERS`; the
papers' own image settings are in :data:`PAPER_SETTINGS`.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from ..ops import (TokenState, attention, bipartite_soft_matching,
                   joint_merge_prune, keep_tokens, merge_schedule,
                   merge_with_sizes, neighbour_merge, plan_tokens, prune,
                   similarity_prune_index, weighted_mean)
from ..ops.checks import (check_block_counts, check_choice, check_counts,
                          check_cosine, check_int, check_number, is_int)
from ..ops.neighbour_merge import DISTANCES, POSITIONS, REPRESENTATIVES

STAGES = ('input', 'blocks')
SWITCHES = ('proportional_attention', 'track_source')


# --------------------------------------------------------------------------
# Prefix tokens: kept out of every reducer
# --------------------------------------------------------------------------
def split_prefix(x: Tensor, state: TokenState,
                 prefix: int) -> Tuple[Tensor, TokenState, Tensor, Tensor]:
    """The patch tokens of ``x`` with their state, and the ``prefix`` tokens
    with their sizes, to be joined back by :func:`join_prefix`."""
    size = state.sizes_like(x)
    source = None if state.source is None else state.source[:, prefix:]
    return (x[:, prefix:],
            TokenState(size=size[:, prefix:], source=source,
                       padded=state.padded),
            x[:, :prefix], size[:, :prefix])


def join_prefix(prefix_x: Tensor, prefix_size: Tensor, x: Tensor,
                state: TokenState,
                prefix_source: Optional[Tensor]) -> Tuple[Tensor, TokenState]:
    """Undo :func:`split_prefix` after the patch tokens were reduced."""
    size = torch.cat([prefix_size.to(state.sizes_like(x).dtype),
                      state.sizes_like(x)], 1)
    source = None
    if state.source is not None:
        source = torch.cat([prefix_source, state.source], 1)
    return torch.cat([prefix_x, x], 1), TokenState(size=size, source=source,
                                                   padded=state.padded)


class AttentionInputs:
    """What a block's attention worked on, for the reducer of that block."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, scale: float,
                 key_bias: Optional[Tensor]) -> None:
        self.q, self.k, self.v = q, k, v  # (B, H, N, D)
        self.scale, self.key_bias = scale, key_bias

    @property
    def metric(self) -> Tensor:
        """The keys averaged over heads ``(B, N, D)``: ToMe's similarity."""
        return self.k.mean(1)

    def class_attention(self) -> Tensor:
        """``(B, H, N)`` attention the class token (token 0) pays to every
        token, log-size bias included: O(N), the full matrix is never
        formed."""
        logits = (self.q[:, :, :1] * self.scale) @ self.k.transpose(-2, -1)
        logits = logits[:, :, 0].float()
        if self.key_bias is not None:
            logits = logits + self.key_bias[:, None].float()
        return logits.softmax(-1)


def class_token_importance(attn: AttentionInputs, prefix: int) -> Tensor:
    """PPT's importance of the patch tokens ``(B, N - prefix)``: the class
    token's attention summed over heads times the norm of each token's value
    over all heads together, normalised to sum 1 (xjwu1024/PPT ppt_deit.py,
    ``PPTAttention.score_assignment_step``)."""
    B, H, N, D = attn.v.shape
    value_norm = attn.v.float().transpose(1, 2).reshape(B, N, H * D).norm(
        dim=-1)
    score = attn.class_attention().sum(1) * value_norm
    score = score[:, prefix:]
    return score / score.sum(1, keepdim=True).clamp(min=1e-12)


# --------------------------------------------------------------------------
# Reducers
# --------------------------------------------------------------------------
class BlockReducer(nn.Module):
    """Reduces the patch tokens inside a block, between attention and MLP.
    ``bind`` gives it the depth and the prefix length at patch time."""

    def bind(self, depth: int, prefix: int) -> None:
        self.depth, self.prefix = depth, prefix

    def requested(self, block_index: int) -> int:
        """Tokens block ``block_index`` is configured to remove."""
        raise NotImplementedError

    def capacity(self, block_index: int, tokens: int) -> int:
        """The most tokens block ``block_index`` can remove of ``tokens``
        (prefix included)."""
        raise NotImplementedError

    def removal(self, block_index: int, tokens: int) -> int:
        return min(self.requested(block_index),
                   self.capacity(block_index, tokens))

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        raise NotImplementedError


class ToMe(BlockReducer):
    """ToMe's bipartite soft matching, as its official timm patch runs it:
    ``r`` tokens merged per block (a list: one per block), the prefix
    protected, sizes tracked.

    Args:
        r: tokens merged away per block, or one count per block.
    """

    def __init__(self, r: Union[int, Sequence[int]] = 0) -> None:
        super().__init__()
        check_counts('ToMe r', r)
        self.r = r if is_int(r) else list(r)

    def bind(self, depth: int, prefix: int) -> None:
        super().bind(depth, prefix)
        self.removals = merge_schedule(self.r, depth, field='ToMe r')

    def requested(self, block_index: int) -> int:
        return self.removals[block_index]

    def capacity(self, block_index: int, tokens: int) -> int:
        return max(tokens - self.prefix, 0) // 2

    def forward(self, x, attn, state, block_index):
        merge, r = bipartite_soft_matching(
            attn.metric, self.removal(block_index, x.shape[1]), self.prefix)
        if r == 0:
            return x, state
        return merge_with_sizes(merge, x, state)


class SelectedBlocks(BlockReducer):
    """Removes ``r`` patch tokens in each of ``blocks`` (from 0)."""

    def __init__(self, blocks: Sequence[int],
                 r: Union[int, Sequence[int]]) -> None:
        super().__init__()
        self.removals = check_block_counts(type(self).__name__, blocks, r)

    def bind(self, depth: int, prefix: int) -> None:
        super().bind(depth, prefix)
        outside = [b for b in self.removals if b >= depth]
        if outside:
            raise ValueError(f'{type(self).__name__} blocks {outside} do not '
                             f'exist: the model has blocks 0..{depth - 1}')

    def requested(self, block_index: int) -> int:
        return self.removals.get(block_index, 0)

    def capacity(self, block_index: int, tokens: int) -> int:
        return max(tokens - self.prefix - 2, 0)  # two patch tokens stay


class PPT(SelectedBlocks):
    """PPT as its official code runs DeiT (xjwu1024/PPT ppt_deit.py,
    ``pp_block_adaptive.forward``): per image, the class token's attention
    times ||v|| scores the patch tokens; under ``threshold`` their variance
    (``torch.var``, unbiased) means spread attention and the image pools
    (one ToMe matching over all tokens, the prefix protected, sizes
    tracked), otherwise it keeps the most important, the prefix first, in
    order of importance. Both branches remove the same count, at most half
    of the patch tokens. Needs a class token.

    Args:
        blocks: indices of the blocks that reduce (from 0).
        r: patch tokens removed in each of them, or one count per block.
        threshold: variance under which an image pools.
    """

    def __init__(self, blocks: Sequence[int] = (3, 6, 9),
                 r: Union[int, Sequence[int]] = 50,
                 threshold: float = 7e-5) -> None:
        super().__init__(blocks, r)
        check_number('PPT threshold', threshold, 0, finite=False)
        self.threshold = threshold

    def bind(self, depth: int, prefix: int) -> None:
        if prefix < 1:
            raise ValueError('PPT scores tokens by the class token\'s '
                             'attention: the model has no class token')
        super().bind(depth, prefix)

    def capacity(self, block_index: int, tokens: int) -> int:
        # The official r = min(r, (x.shape[1] - 1) // 2), taken before the
        # branch is chosen: ToMe's bound for the pooling branch.
        return max(tokens - self.prefix, 0) // 2

    def forward(self, x, attn, state, block_index):
        n = x.shape[1]
        r = self.removal(block_index, n)
        if r == 0:
            return x, state
        importance = class_token_importance(attn, self.prefix)
        pool = importance.var(dim=1) < self.threshold  # (B,)
        merge, _ = bipartite_soft_matching(attn.metric, r, self.prefix)
        pooled, pooled_state = merge_with_sizes(merge, x, state)
        # The official code sorts the scores with the class token's set to
        # 2, above every patch's, and keeps the first N - r as they come.
        order = importance.argsort(dim=1, descending=True, stable=True)
        prefix = torch.arange(self.prefix, device=x.device).expand(
            x.shape[0], -1)
        kept = torch.cat([prefix, order[:, :n - r - self.prefix]
                          + self.prefix], 1)
        pruned, pruned_state = keep_tokens(x, state, kept)

        def choose(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(pool.view(-1, *[1] * (a.dim() - 1)), a,
                               b.to(a.dtype))

        size = choose(pooled_state.sizes_like(pooled),
                      pruned_state.sizes_like(pruned))
        source = None
        if state.source is not None:
            source = choose(pooled_state.source, pruned_state.source)
        return choose(pooled, pruned), TokenState(size=size, source=source)


class JMP(SelectedBlocks):
    """Joint merging and pruning (:func:`mmtokred.ops.joint_merge_prune`)
    on the patch tokens, with the class token's importance (PPT's score)
    where the model has a class token, else the tokens' norm.

    Args:
        blocks, r: as for :class:`PPT`.
        threshold: key cosine similarity from which a leaving token is
            merged instead of pruned.
    """

    def __init__(self, blocks: Sequence[int] = (3, 6, 9),
                 r: Union[int, Sequence[int]] = 50,
                 threshold: float = 0.5) -> None:
        super().__init__(blocks, r)
        check_cosine('JMP threshold', threshold)
        self.threshold = threshold

    def forward(self, x, attn, state, block_index):
        r = self.removal(block_index, x.shape[1])
        if r == 0:
            return x, state
        patches, patch_state, prefix_x, prefix_size = split_prefix(
            x, state, self.prefix)
        importance = (class_token_importance(attn, self.prefix)
                      if self.prefix else patches.float().norm(dim=-1))
        channels = patches.shape[-1]
        packed = torch.cat([patches, attn.metric[:, self.prefix:].to(x.dtype),
                            importance[..., None].to(x.dtype)], -1)
        while r > 0:  # rounds of at most half the tokens
            step = min(r, packed.shape[1] // 2)
            packed, patch_state, _ = joint_merge_prune(
                packed, packed[..., channels:-1], patch_state,
                packed[..., -1], step, self.threshold)
            r -= step
        return join_prefix(
            prefix_x, prefix_size, packed[..., :channels], patch_state,
            None if state.source is None else state.source[:, :self.prefix])


class InputReducer(nn.Module):
    """Embeds an image into (fewer) patch tokens before the first block."""

    def tokens_out(self, grid: Sequence[int]) -> int:
        """Patch tokens kept of an ``(H', W')`` ``grid``; raises ValueError
        naming the field when the grid cannot hold the budget."""
        raise NotImplementedError

    def forward(self, image: Tensor, projection: nn.Conv2d, pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        """``(B, N', C)`` patch tokens with their position embedding added,
        and their state. ``pos_embed`` is the model's ``(1, P + N, C)``:
        the ``N`` patches' rows last, after any prefix rows (the parameter
        itself is passed, not a view of it, so that module hooks such as
        torch's FLOP counter can wrap it)."""
        raise NotImplementedError


class NEPAM(InputReducer):
    """NEPAM on the 2-D patch grid, as its official code runs DeiT: windows
    of ``window = (h, w)`` patches scored against their first patch, the
    ``num_windows`` most uniform each kept as one token (patch ``keep`` of
    the window), the others projected as they are.

    Args:
        window: patches per window (1x2 and 2x2 in the paper).
        num_windows / ratio: windows merged, a count or a fraction.
        distance: see :data:`mmtokred.ops.DISTANCES` (the official code's
            'manhattan', 'euclidean' and 'cosine' are 'l1', 'l2' and
            'cosine').
        keep: which patch of a window stands for it (0: the first; the
            official DeiT-S setting keeps the second of 1x2).
        representative, position: as for the video NEPAM.
    """

    def __init__(self, window: Sequence[int] = (1, 2),
                 num_windows: Optional[int] = None,
                 ratio: Optional[float] = None,
                 distance: str = 'l1', keep: int = 0,
                 representative: str = 'keep1',
                 position: str = 'representative') -> None:
        super().__init__()
        if not isinstance(window, (list, tuple)) or len(window) != 2 or \
                not all(is_int(s) and s >= 1 for s in window):
            raise ValueError('NEPAM window must be 2 positive integers '
                             f'(h, w), got {window!r}')
        if (num_windows is None) == (ratio is None):
            raise ValueError('NEPAM needs exactly one of num_windows and '
                             'ratio')
        if num_windows is not None:
            check_int('NEPAM num_windows', num_windows)
        else:
            check_number('NEPAM ratio', ratio, 0, 1)
        check_int('NEPAM keep', keep, 0, window[0] * window[1] - 1)
        check_choice('NEPAM distance', distance, DISTANCES)
        check_choice('NEPAM representative', representative,
                     REPRESENTATIVES)
        check_choice('NEPAM position', position, POSITIONS)
        self.window = tuple(window)
        self.num_windows, self.ratio = num_windows, ratio
        self.distance, self.keep = distance, keep
        self.representative, self.position = representative, position

    def merged_windows(self, grid: Sequence[int]) -> int:
        for name, size, limit in zip('hw', self.window, grid):
            if size > limit:
                raise ValueError(
                    f'NEPAM window {self.window} does not fit the patch grid '
                    f'{tuple(grid)}: its {name} must be in [1, {limit}]')
        windows = (grid[0] // self.window[0]) * (grid[1] // self.window[1])
        if self.ratio is not None:
            return round(self.ratio * windows)
        if self.num_windows > windows:
            raise ValueError(
                f'NEPAM num_windows={self.num_windows} exceeds the {windows} '
                f'windows of {self.window} on the grid {tuple(grid)}')
        return self.num_windows

    def tokens_out(self, grid: Sequence[int]) -> int:
        volume = self.window[0] * self.window[1]
        return math.prod(grid) - self.merged_windows(grid) * (volume - 1)

    def forward(self, image, projection, pos_embed, track_source):
        grid = [n // p for n, p in zip(image.shape[2:],
                                       projection.kernel_size)]
        return neighbour_merge(
            image[:, :, None], projection.weight[:, :, None],
            projection.bias, pos_embed[:, -math.prod(grid):],
            (1, *self.window),
            self.merged_windows(grid), None, self.distance,
            self.representative, self.position, track_source, self.keep)


class PatchSimilarityPruning(InputReducer):
    """Prune the most redundant patches after the patch projection (mean
    cosine similarity to the others), each only if a less redundant patch
    at least ``threshold`` similar stays; the prefix tokens are not
    patches and are never pruned.

    Args:
        ratio: fraction of the patches pruned, in [0, 1).
        threshold: cosine similarity to a kept patch that pruning requires.
        keep_mean: 'drop', or 'nearest' (merged into the most similar kept
            patch, size-weighted).
    """

    def __init__(self, ratio: float = 0.3, threshold: Optional[float] = 0.5,
                 keep_mean: str = 'nearest') -> None:
        super().__init__()
        check_number('PatchSimilarityPruning ratio', ratio, 0, 1,
                     high_open=True)
        if threshold is not None:
            check_cosine('PatchSimilarityPruning threshold', threshold)
        check_choice('PatchSimilarityPruning keep_mean', keep_mean,
                     ('drop', 'nearest'))
        self.ratio, self.threshold, self.keep_mean = ratio, threshold, \
            keep_mean

    def tokens_out(self, grid: Sequence[int]) -> int:
        n = math.prod(grid)
        pruned = round(self.ratio * n)
        if pruned >= n:
            raise ValueError(f'PatchSimilarityPruning ratio={self.ratio} '
                             f'prunes all {n} patches of the grid '
                             f'{tuple(grid)}; one must stay')
        return n - pruned

    def forward(self, image, projection, pos_embed, track_source):
        embeddings = projection(image).flatten(2).transpose(1, 2)
        tokens = embeddings + pos_embed[:, -embeddings.shape[1]:]
        batch, n, _ = tokens.shape
        state = TokenState()
        if track_source:
            state.source = torch.eye(n, device=tokens.device,
                                     dtype=tokens.dtype).expand(batch, -1, -1)
        r = n - self.tokens_out(
            [s // p for s, p in zip(image.shape[2:], projection.kernel_size)])
        if r == 0:
            return tokens, state
        order, _ = similarity_prune_index(embeddings, r, self.threshold)
        return prune(tokens, state, order, n - r, self.keep_mean, embeddings)


INPUT_REDUCERS = {'NEPAM': NEPAM,
                  'PatchSimilarityPruning': PatchSimilarityPruning}
BLOCK_REDUCERS = {'ToMe': ToMe, 'PPT': PPT, 'JMP': JMP}

#: The methods as their papers ran them on images (DeiT-S at 224 unless
#: named otherwise), for :func:`apply_token_reduction`.
PAPER_SETTINGS: Dict[str, Dict] = {
    # xjwu1024/PPT README: --r_tokens 50 --pp_loc_list 3 6 9
    # --threshold 7e-5 (DeiT-S: 2.94 GMACs, 79.50 top-1 off the shelf);
    # its pp_block_adaptive.forward takes r = min(r, (N - 1) // 2), so
    # block 9 removes 48 (197 -> 147 -> 97 -> 49); proportional attention
    # on (main.py --prop_attn, store_false), as in its ToMe-derived blocks.
    'ppt-deit-s': dict(blocks=dict(type='PPT', blocks=(3, 6, 9),
                                   r=(50, 50, 48), threshold=7e-5),
                       proportional_attention=True),
    # JackJiang2018/NEPAM val.sh / ben.sh: deit_small_patch16_224_ablation,
    # merge_group_size 1 2, merge_group_num 39 (of 98 windows at 224),
    # token_pos 0 1 (the second patch of each window kept), keep1,
    # distance cosine: model_nepam.py's NepamAblation.CosSim returns
    # -F.cosine_similarity ("turn similarity into distance") and SortIndex
    # merges the lowest scores, the most similar windows.
    'nepam-deit-s': dict(input=dict(type='NEPAM', window=(1, 2),
                                    num_windows=39, distance='cosine',
                                    keep=1)),
    # ViT-B/16-384 (24x24 patches, 288 windows of 1x2): the paper reports
    # +25% speed and -0.07 top-1 but not its count. Half the windows (577
    # -> 433 tokens, 0.73 of the FLOPs) gives that speed on CPU here; DeiT-S's
    # share (39/98) gave 0.78 of the FLOPs and 1.23-1.25x. The l1 distance is
    # the official code's default ('manhattan').
    'nepam-vit-b16-384': dict(input=dict(type='NEPAM', window=(1, 2),
                                         ratio=0.5, distance='l1', keep=1)),
    # JMP's published DeiT-S figure is -35% FLOPs: PPT's placement and
    # budget, the class token's importance.
    'jmp-deit-s': dict(blocks=dict(type='JMP', blocks=(3, 6, 9), r=50,
                                   threshold=0.5),
                       proportional_attention=True),
    'patchsim-deit-s': dict(input=dict(type='PatchSimilarityPruning',
                                       ratio=0.3, threshold=0.5)),
}


# --------------------------------------------------------------------------
# The patch
# --------------------------------------------------------------------------
class ReducingAttention(Attention):
    """timm's ``Attention`` through :func:`mmtokred.ops.attention`, with a
    key bias and its q, k, v handed to the block's reducer."""

    def forward(self, x: Tensor, key_bias: Optional[Tensor] = None
                ) -> Tuple[Tensor, AttentionInputs]:
        B, N, _ = x.shape
        gate = getattr(self, 'gate', None)
        gate = gate(x).sigmoid() if gate is not None else None
        head_dim = getattr(self, 'head_dim', None) or self.qkv.out_features \
            // 3 // self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads,
                                  head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = attention(q, k, v, self.scale, key_bias,
                        self.attn_drop.p if self.training else 0.)
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * head_dim)
        out = self.norm(out) if hasattr(self, 'norm') else out
        if gate is not None:
            out = out * gate
        out = self.proj_drop(self.proj(out))
        return out, AttentionInputs(q, k, v, self.scale, key_bias)


class ReducingBlock(Block):
    """timm's pre-norm ``Block`` with a token reducer before the MLP."""

    def forward(self, x: Tensor, state: TokenState,
                reducer: Optional[BlockReducer] = None, block_index: int = 0,
                proportional_attention: bool = False
                ) -> Tuple[Tensor, TokenState]:
        key_bias = state.key_bias(proportional_attention)
        out, inputs = self.attn(self.norm1(x), key_bias)
        x = x + self.drop_path1(self.ls1(out))
        if reducer is not None:
            x, state = reducer(x, inputs, state, block_index)
        del inputs
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))), state


def _build(cfg: Optional[Dict], table: Dict,
           stage: str) -> Optional[nn.Module]:
    if cfg is None:
        return None
    if not isinstance(cfg, dict) or cfg.get('type') not in table:
        raise ValueError(f'token_reduction.{stage} must be a dict with type '
                         f'one of {tuple(table)}, got {cfg!r}')
    options = {k: v for k, v in cfg.items() if k != 'type'}
    return table[cfg['type']](**options)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError('apply_token_reduction patches timm VisionTransformer '
                        f'models (ViT, DeiT), got {type(model).__name__}')
    unsupported = [
        name for name, bad in (
            ('dynamic_img_size', getattr(model, 'dynamic_img_size', False)),
            ('attn_pool (global_pool="map")', model.attn_pool is not None),
            ('a patch-embedding norm', not isinstance(
                model.patch_embed.norm, nn.Identity)),
        ) if bad
    ]
    unsupported += [f'block {i} ({type(b).__name__})'
                    for i, b in enumerate(model.blocks)
                    if type(b) not in (Block, ReducingBlock)
                    or type(b.attn) not in (Attention, ReducingAttention)]
    if unsupported:
        raise ValueError('apply_token_reduction supports the standard timm '
                         'ViT blocks only; this model has '
                         + ', '.join(unsupported))


def apply_token_reduction(model: nn.Module,
                          token_reduction: Optional[Union[Dict, str]] = None
                          ) -> nn.Module:
    """Patch a timm ``VisionTransformer`` in place to reduce tokens.

    Args:
        model: a timm ViT or DeiT (distilled included).
        token_reduction: ``dict(input=..., blocks=...,
            proportional_attention=False, track_source=False)`` (reducers of
            :data:`INPUT_REDUCERS` / :data:`BLOCK_REDUCERS` by ``type``), a
            name of :data:`PAPER_SETTINGS`, or None: no reduction (outputs
            equal timm's).

    Returns:
        The model (its class replaced by a subclass; weights untouched).
    """
    _check_model(model)
    if isinstance(token_reduction, str):
        check_choice('token_reduction', token_reduction, tuple(PAPER_SETTINGS))
        token_reduction = PAPER_SETTINGS[token_reduction]
    cfg = dict(token_reduction or {})
    unknown = sorted(set(cfg) - set(STAGES + SWITCHES))
    if unknown:
        raise ValueError(f'token_reduction has unknown keys {unknown}; '
                         f'allowed: {STAGES + SWITCHES}')
    for switch in SWITCHES:
        if not isinstance(cfg.get(switch, False), bool):
            raise ValueError(f'token_reduction.{switch} must be True or '
                             f'False, got {cfg[switch]!r}')
    input_reducer = _build(cfg.get('input'), INPUT_REDUCERS, 'input')
    block_reducer = _build(cfg.get('blocks'), BLOCK_REDUCERS, 'blocks')
    prefix = model.num_prefix_tokens
    if block_reducer is not None:
        block_reducer.bind(len(model.blocks), prefix)
    plan = plan_tokens(input_reducer, block_reducer,
                       model.patch_embed.grid_size, len(model.blocks), prefix)
    if plan.caps:
        raise ValueError(
            f'token_reduction.blocks: {type(block_reducer).__name__} asks for '
            f'more tokens than the blocks see ({prefix} prefix tokens '
            f'included): {plan.describe_caps()}. Lower r')

    for block in model.blocks:
        block.__class__ = ReducingBlock
        block.attn.__class__ = ReducingAttention
    if not isinstance(model, TokenReductionMixin):
        model.__class__ = type(f'TokenReduction{type(model).__name__}',
                               (TokenReductionMixin, type(model)), {})
    model.input_reducer = input_reducer
    model.block_reducer = block_reducer
    model.proportional_attention = cfg.get('proportional_attention', False)
    model.track_source = cfg.get('track_source', False)
    return model


class TokenReductionMixin:
    """The forward pass of a patched timm ViT: the input stage, the blocks
    with their reducer, and size-weighted average pooling."""

    def forward_tokens(self, x: Tensor) -> Tuple[Tensor, TokenState]:
        """Tokens after the final norm ``(B, N', C)`` and their state."""
        prefix = self.num_prefix_tokens
        if self.input_reducer is None:
            x = self._pos_embed(self.patch_embed(x))
            state = TokenState()
        else:
            pos = self.pos_embed
            tokens, state = self.input_reducer(
                x, self.patch_embed.proj, pos, self.track_source)
            # The prefix tokens (class, distillation, registers) as the
            # model's own _pos_embed makes them, from one dummy image.
            dummy = pos.new_zeros(1, math.prod(self.patch_embed.grid_size),
                                  tokens.shape[-1])
            prefix_x = self._pos_embed(dummy)[:, :prefix].to(tokens.dtype)
            x = torch.cat([prefix_x.expand(tokens.shape[0], -1, -1),
                           self.pos_drop(tokens)], 1)
            if state.source is not None:  # columns: prefix, then patches
                eye = torch.eye(prefix, dtype=state.source.dtype,
                                device=x.device).expand(x.shape[0], -1, -1)
                prefix_source = F.pad(eye, (0, state.source.shape[-1]))
                state.source = F.pad(state.source, (prefix, 0))
            if state.size is not None or state.source is not None:
                x, state = join_prefix(
                    x[:, :prefix], torch.ones_like(x[:, :prefix, :1]),
                    x[:, prefix:], state,
                    None if state.source is None else prefix_source)
        if self.track_source and state.source is None:
            state.source = torch.eye(x.shape[1], device=x.device,
                                     dtype=x.dtype).expand(x.shape[0], -1, -1)
        x = self.norm_pre(self.patch_drop(x))
        for index, block in enumerate(self.blocks):
            x, state = block(
                x, state, reducer=self.block_reducer, block_index=index,
                proportional_attention=self.proportional_attention)
        return self.norm(x), state

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_tokens(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        x, state = self.forward_tokens(x)
        if self.global_pool == 'avg' and state.size is not None:
            # Merged tokens stand for several patches: weigh them so.
            prefix = self.num_prefix_tokens
            pooled = weighted_mean(x[:, prefix:], state.size[:, prefix:])
            return self.head(self.head_drop(self.fc_norm(pooled)))
        return self.forward_head(x)


__all__ = ['apply_token_reduction', 'PAPER_SETTINGS', 'INPUT_REDUCERS',
           'BLOCK_REDUCERS', 'TokenReductionMixin']
