"""Token reductions from one knob, and the knob for a FLOPs target.

Every method of the sweep has one knob in [0, 1], more reduction for
larger values: NEPAM's share of windows merged, ToMe's r per block as a
share of half the tokens, the share the selected-block reducers remove over
their blocks (the same fraction in each), the share pruned at the input.
:data:`METHODS` turns a knob into a backbone's ``token_reduction``;
everything a method does not vary comes from its registered defaults.
:func:`least_knob` bisects a knob to the least reduction within a FLOPs
target. The calibration search builds its shapes from the same pieces
(:data:`BLOCK_REDUCERS`, :func:`spend`, :data:`NEPAM_DEFAULT`), so that
its default shape is the sweep's recipe.
"""
import ast
from typing import (Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np
from mmengine.config import Config

from ..reducers import SWITCHES, every_block, proportional_blocks

#: The main methods, measured at every target; NEPAM followed by an in-block
#: method where NEPAM's default alone is not enough; the others compare one
#: choice (importance score, what pruning keeps, window, rule, placement)
#: at half the FLOPs.
MAIN_TARGETS = (0.7, 0.5, 0.35, 0.25)
COMBINED_TARGETS = (0.35, 0.25)
COMPARE_TARGETS = (0.5, )
#: Light NEPAM, the first stage of the combined methods (and
#: configs/videomae_nepam_jmp.py's): chosen on the hand-held proxy's
#: validation split as the lightest-merging window that keeps >= 98% of
#: the dense predictions (docs/proxy_results.md).
NEPAM_DEFAULT = dict(type='NEPAM', window=(1, 2, 2), ratio=0.1)
#: Halvings of the knob's interval when bisecting to a FLOPs target, after
#: one count at the most reduction.
BISECTION_STEPS = 14


class Grid(NamedTuple):
    """Tokens of the full grid, and blocks."""
    tokens: int
    depth: int


class Method(NamedTuple):
    """``make(knob, grid)`` gives a ``token_reduction``; the knob is in
    [0, 1], more reduction for larger values."""
    make: Callable[[float, Grid], Dict]
    targets: Sequence[float]


def model_grid(cfg: Config) -> Grid:
    """The token grid of a config's backbone."""
    backbone = cfg.model.backbone
    size = backbone.get('img_size', 224) // backbone.get('patch_size', 16)
    frames = backbone.get('num_frames', 16) // backbone.get('tubelet_size', 2)
    return Grid(frames * size * size, backbone.get('depth', 12))


def stage_counts(tokens: int, stages: int, removed: float) -> List[int]:
    """Tokens to remove at each of ``stages`` steps so that ``removed`` of
    ``tokens`` is gone, the same fraction at each step; at most all but two
    tokens at a step (what every in-block reducer can remove)."""
    per_stage = (1 - removed)**(1 / stages)
    counts, n = [], tokens
    for _ in range(stages):
        count = min(int(round(n * (1 - per_stage))), max(n - 2, 0))
        counts.append(count)
        n -= count
    return counts


def tome_r(tokens: int, amount: float) -> int:
    """ToMe's r in every block for ``amount`` in [0, 1]: that share of half
    the ``tokens`` entering the first block (a constant r of tokens / depth
    would never go below half the FLOPs)."""
    return int(amount * tokens / 2)


def half(tokens: int) -> int:
    """What a ToMe block can merge away: half its tokens."""
    return tokens // 2


def tome_stage(tokens: int, blocks: int, amount: float) -> List[int]:
    """:func:`tome_r` in each of ``blocks`` blocks, before any is cut to
    what it can merge."""
    return [tome_r(tokens, amount)] * blocks


def spend(counts: Sequence[int], tokens: int,
          most: Callable[[int], int]) -> List[int]:
    """``counts`` cut, block after block, to ``most(n)`` of the ``n``
    tokens each block sees when ``tokens`` enter the first."""
    spent = []
    for count in counts:
        spent.append(min(count, most(tokens)))
        tokens -= spent[-1]
    return spent


def tome_counts(tokens: int, depth: int, amount: float) -> List[int]:
    """ToMe's recipe: :func:`tome_r` in each of ``depth`` blocks, each
    merging what it can (at most half of its tokens)."""
    return spend(tome_stage(tokens, depth, amount), tokens, half)


def all_blocks(depth: int) -> List[int]:
    """Every block of ``depth``: where ToMe reduces."""
    return list(range(depth))


def above_floor(tokens: int, min_tokens: int) -> int:
    """What a pruning block may remove: all but ``min_tokens``."""
    return max(tokens - min_tokens, 0)


def half_merged(tokens: int, min_tokens: int) -> int:
    """What a ToMe block may merge away: :func:`half` its tokens (its
    bipartite matching keeps the other half, whatever ``min_tokens``)."""
    return half(tokens)


class BlockRecipe(NamedTuple):
    """How calibration lays out a block reducer's schedule.

    ``counts(tokens, blocks, amount)``: tokens each of ``blocks`` reducing
    blocks removes for ``amount`` in [0, 1] when ``tokens`` enter the
    first (the sweep's recipe); ``most(tokens, min_tokens)``: the most a
    block seeing ``tokens`` may remove; ``placement(depth)``: the blocks
    it reduces in, named in its config where ``lists_blocks`` (ToMe's ``r``
    covers every block); ``threshold_moves(value)``: the thresholds tried
    from ``value``, where calibration tunes one.
    """
    type: str
    counts: Callable[[int, int, float], List[int]]
    most: Callable[[int, int], int]
    placement: Callable[[int], List[int]] = every_block
    lists_blocks: bool = True
    threshold_moves: Optional[Callable[[float], Tuple[float, ...]]] = None


def _selected(kind: str, threshold_moves: Optional[Callable] = None
              ) -> BlockRecipe:
    """A reducer of the selected blocks: the same fraction in each."""
    return BlockRecipe(kind, stage_counts, above_floor,
                       threshold_moves=threshold_moves)


#: The block reducers a calibration method may name, by the method's name
#: (the sweep's methods of the same names).
BLOCK_REDUCERS: Dict[str, BlockRecipe] = {
    'tome': BlockRecipe('ToMe', tome_stage, half_merged, all_blocks,
                        lists_blocks=False),
    # The statistic's scale: factors.
    'ppt': _selected('PPT', lambda t: (2 * t, t / 2)),
    # A cosine similarity.
    'jmp': _selected('JMP', lambda t: tuple(
        v for v in (t + 0.25, t - 0.25) if -1 <= v <= 1)),
    'prune': _selected('TokenPruning'),
    'progressive': _selected('SimilarityPruning'),
}


def least_knob(flops_ratio: Callable[[float], float],
               target: float) -> Optional[float]:
    """The least knob in [0, 1] (to ``2**-BISECTION_STEPS``) whose
    ``flops_ratio(knob)`` is at most ``target``; None if even the most
    reduction stays above it."""
    if flops_ratio(1.) > target:
        return None
    low, high = 0., 1.
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if flops_ratio(middle) <= target:
            high = middle
        else:
            low = middle
    return high


def _nepam(window: Optional[tuple] = None) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        stage = dict(NEPAM_DEFAULT, ratio=knob)
        if window is not None:
            stage['window'] = window
        return dict(input=stage)

    return make


def _tome(knob: float, grid: Grid) -> Dict:
    return dict(blocks=dict(type='ToMe',
                            r=tome_counts(grid.tokens, grid.depth, knob)))


def _in_blocks(kind: str, placement: Callable = every_block,
               **options) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        blocks = placement(grid.depth)
        return dict(blocks=dict(type=kind, blocks=blocks,
                                r=stage_counts(grid.tokens, len(blocks),
                                               knob), **options))

    return make


def _patchsim(**options) -> Callable:

    def make(knob: float, grid: Grid) -> Dict:
        return dict(input=dict(type='PatchSimilarityPruning',
                               ratio=min(knob, 0.99), **options))

    return make


def _after_nepam(blocks: Callable) -> Callable:
    """NEPAM at its default, then ``blocks`` for the rest."""

    def make(knob: float, grid: Grid) -> Dict:
        window = int(np.prod(NEPAM_DEFAULT['window']))
        merged = round(NEPAM_DEFAULT['ratio'] * grid.tokens / window)
        after = Grid(grid.tokens - (window - 1) * merged, grid.depth)
        return dict(input=dict(NEPAM_DEFAULT), **blocks(knob, after))

    return make


def _main(make: Callable) -> Method:
    return Method(make, MAIN_TARGETS)


def _compare(make: Callable) -> Method:
    return Method(make, COMPARE_TARGETS)


METHODS: Dict[str, Method] = {
    # Measured as configured, at its own FLOPs.
    'nepam_default': Method(lambda knob, grid: dict(input=dict(NEPAM_DEFAULT)),
                            ()),
    'nepam': Method(_nepam(), (0.9, 0.85) + MAIN_TARGETS),
    'tome': _main(_tome),
    'ppt': _main(_in_blocks('PPT')),
    'jmp': _main(_in_blocks('JMP')),
    'prune': _main(_in_blocks('TokenPruning')),
    'patchsim': _main(_patchsim()),
    'progressive': _main(_in_blocks('SimilarityPruning')),
    'nepam_tome': Method(_after_nepam(_tome), COMBINED_TARGETS),
    'nepam_ppt': Method(_after_nepam(_in_blocks('PPT')), COMBINED_TARGETS),
    'nepam_jmp': Method(_after_nepam(_in_blocks('JMP')), COMBINED_TARGETS),
    # NEPAM's window.
    'nepam_2x2x2': _compare(_nepam((2, 2, 2))),
    'nepam_2x1x1': _compare(_nepam((2, 1, 1))),
    'nepam_1x1x2': _compare(_nepam((1, 1, 2))),
    # Importance scores against the default ('pooled_query'), on pruning.
    **{f'prune_{score}': _compare(_in_blocks('TokenPruning',
                                             importance=score))
       for score in ('received', 'norm', 'sharpness', 'random')},
    # What pruning does with the pruned tokens, against 'nearest'.
    **{f'prune_{keep}': _compare(_in_blocks('TokenPruning', keep_mean=keep))
       for keep in ('drop', 'fuse')},
    # The random floor of the adaptive methods, and PPT's paper rule.
    'ppt_random': _compare(_in_blocks('PPT', importance='random')),
    'jmp_random': _compare(_in_blocks('JMP', importance='random')),
    'ppt_paper': _compare(_in_blocks('PPT', rule='paper', threshold=7e-5)),
    'ppt_drop': _compare(_in_blocks('PPT', keep_mean='drop')),
    # The official three large steps (blocks 3, 6, 9 of 12, scaled)
    # against the default, a small step in every block from 1 to depth - 2.
    **{f'{name}_official': _compare(_in_blocks(kind, proportional_blocks))
       for name, kind in (('ppt', 'PPT'), ('jmp', 'JMP'),
                          ('prune', 'TokenPruning'),
                          ('progressive', 'SimilarityPruning'))},
    # The diversity rule of patch-similarity pruning against plain.
    'patchsim_plain': _compare(_patchsim(threshold=None)),
    'patchsim_drop': _compare(_patchsim(keep_mean='drop')),
}


def resolve(spec: str) -> Method:
    """A method by name, or ``name:key=value,key=value`` for the method with
    options of its reducer changed (of the in-block stage where it has
    one), e.g. ``ppt:threshold=1.5`` or ``prune:keep_mean='fuse'``; the
    backbone switches (``proportional_attention=True``) too."""
    name, _, options = spec.partition(':')
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r} in {spec!r}; choose from '
                         f'{tuple(METHODS)}')
    method = METHODS[name]
    if not options:
        return method
    overrides = {}
    for option in options.split(','):
        key, equals, value = option.partition('=')
        if not equals:
            raise ValueError(f'method options are key=value, got {option!r} '
                             f'in {spec!r}')
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare name: fuse, nearest, ...

    switches = {k: overrides.pop(k) for k in list(overrides) if k in SWITCHES}

    def make(knob: float, grid: Grid) -> Dict:
        reduction = dict(method.make(knob, grid), **switches)
        stage = 'blocks' if 'blocks' in reduction else 'input'
        reduction[stage] = dict(reduction[stage], **overrides)
        return reduction

    return Method(make, method.targets)
