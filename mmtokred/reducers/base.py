"""The two places where a token reducer plugs into a ViT, for both
backbones (the VideoMAE one of :mod:`mmtokred.models` and timm's image ViTs
of :mod:`mmtokred.timm`).

``token_reduction=dict(input=..., blocks=...)`` names one reducer for each
place, each a config dict of a registered reducer (either may be left out):

- ``input``: an :class:`InputReducer`. It sees the normalised pixels before
  the patch projection and decides which tokens the first block gets, so
  that every block, and the peak memory, see fewer tokens.
- ``blocks``: a :class:`BlockReducer`. Every block calls it between the
  attention residual and the MLP, with that block's queries, keys and values
  (:class:`AttentionInputs`) for similarity and importance scores.

Both return the reduced tokens with their :class:`~mmtokred.ops.TokenState`,
so sizes are tracked in one place and pooling stays size-weighted. Prefix
tokens (class, distillation, registers) are the backbone's: an input reducer
never sees them, and a block reducer learns their count at :meth:`bind
<BlockReducer.bind>` and never removes them.

Two switches apply to the whole backbone:

- ``proportional_attention`` (default False): add log(size) of each key to
  the attention logits. ToMe's authors turn it off for MAE-family models used
  off the shelf, like VideoMAE.
- ``track_source`` (default False): keep the ``(B, N, N0)`` map of which
  input patches each token holds, for pictures.
- ``packed`` (default True where the backbone can pack): clips that keep
  different numbers of tokens (NEPAM's threshold, ToMe's similarity
  threshold) run packed into one sequence, each attending to itself
  (:mod:`mmtokred.ops.packed`); False pads them to the longest (only
  reducers with ``supports_padding`` follow a padding input stage then).
"""
import math
from typing import (Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import torch
from torch import Tensor, nn

from ..ops import TokenPlan, TokenState, plan_tokens
from ..ops.packed import pack_equal, packed_cat, split_clips
from .costs import Widths
from .registry import Builder, build_reducer

STAGES = ('input', 'blocks')
SWITCHES = ('proportional_attention', 'track_source', 'packed')


class AttentionInputs(NamedTuple):
    """What a block's attention worked on, for the reducer of that block."""
    q: Tensor  #: (B, H, N, D)
    k: Tensor  #: (B, H, N, D)
    v: Tensor  #: (B, H, N, D)
    scale: float  #: multiplier of the dot products
    key_bias: Optional[Tensor]  #: (B, N) added to the logits, or None

    @property
    def metric(self) -> Tensor:
        """The keys averaged over heads ``(B, N, D)``: ToMe's similarity."""
        return self.k.mean(1)

    def packed(self) -> 'AttentionInputs':
        """These inputs of a batch of clips of one length, packed as
        :func:`~mmtokred.ops.packed.pack_equal` packs its tokens."""
        q, k, v = (t.transpose(0, 1).reshape(1, t.shape[1], -1, t.shape[-1])
                   for t in (self.q, self.k, self.v))
        bias = None if self.key_bias is None else self.key_bias.reshape(1, -1)
        return AttentionInputs(q, k, v, self.scale, bias)

    def class_attention(self) -> Tensor:
        """``(B, H, N)`` attention the class token (token 0) pays to every
        token, key bias included, in fp32: O(N), the full matrix is never
        formed."""
        logits = (self.q[:, :, :1] * self.scale) @ self.k.transpose(-2, -1)
        logits = logits[:, :, 0].float()
        if self.key_bias is not None:
            logits = logits + self.key_bias[:, None].float()
        return logits.softmax(-1)


class Reducer(nn.Module):
    """What every token reducer offers the tools: counts of the branches an
    adaptive reducer took (e.g. PPT's pool/prune decision per clip and
    block), named in ``branches``; and, while ``observing`` is set, the
    per-clip values it decided on (e.g. PPT's statistic).

    The counts accumulate on the reducer's device (a buffer outside the
    state dict), so a forward pass never waits for the device to count;
    they become numbers only when :meth:`branch_counts` is asked.
    """

    branches: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        #: Keep what :meth:`observe` is given (off: nothing accumulates).
        self.observing = False
        self.register_buffer('branch_totals',
                             torch.zeros(len(self.branches),
                                         dtype=torch.long),
                             persistent=False)
        self.reset_counts()

    def branch_counts(self) -> Dict[str, int]:
        """How often each branch was taken since :meth:`reset_counts`."""
        return dict(zip(self.branches, self.branch_totals.tolist()))

    def observations(self) -> Dict[str, Tensor]:
        """What was observed since :meth:`reset_counts`, one 1-D tensor per
        name (values of every clip and block, in order)."""
        return {name: torch.cat(values)
                for name, values in self._observed.items()}

    def reset_counts(self) -> None:
        """Start counting branches and observing afresh."""
        self.branch_totals.zero_()
        self._observed: Dict[str, List[Tensor]] = {}

    def count(self, branch: str, times: Tensor) -> None:
        """Add ``times`` (a tensor on the reducer's device) to ``branch``."""
        self.branch_totals[self.branches.index(branch)] += times

    def observe(self, name: str, values: Tensor) -> None:
        """Keep ``values`` (detached, on their device) under ``name`` while
        ``observing``."""
        if self.observing:
            self._observed.setdefault(name, []).append(values.detach())


# --------------------------------------------------------------------------
# The patch projection, as the input reducers see it
# --------------------------------------------------------------------------
def grid_of(pixels: Tensor, projection: nn.Module) -> Tuple[int, int, int]:
    """The ``(T', H', W')`` token grid of ``pixels`` ``(B, C, T, H, W)``
    under ``projection`` (a Conv3d over tubelets, or a Conv2d over patches
    of single frames: T' = T)."""
    kernel = tuple(projection.kernel_size)
    if len(kernel) == 2:
        kernel = (1, *kernel)
    t, h, w = (n // s for n, s in zip(pixels.shape[2:], kernel))
    return t, h, w


def projection_weight(projection: nn.Module) -> Tensor:
    """The projection's weight as a Conv3d's ``(E, C, t, h, w)``."""
    weight = projection.weight
    return weight if weight.dim() == 5 else weight[:, :, None]


def embed(pixels: Tensor, projection: nn.Module) -> Tensor:
    """Every token ``(B, N, E)`` of ``pixels`` ``(B, C, T, H, W)``, without
    position: the backbone's own projection (a Conv2d sees the one frame),
    contiguous, as the VideoMAE backbone's dense path makes them."""
    if isinstance(projection, nn.Conv2d):
        pixels = pixels[:, :, 0]
    return projection(pixels).flatten(2).transpose(1, 2).contiguous()


class InputReducer(Reducer):
    """Turns pixels into (fewer) tokens before the first block."""

    #: Whether clips of one batch may keep different numbers of tokens (the
    #: batch is then packed or padded; see ``TokenState``).
    may_pad = False
    #: Whether to return such clips packed (``TokenState.lengths``) rather
    #: than padded: the ``packed`` switch, set by
    #: :func:`build_token_reduction`. Where a reducer pads anyway, the
    #: backbone packs its output.
    packs = False

    def forward(self, pixels: Tensor, projection: nn.Module,
                pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        """Embed ``pixels`` keeping only the tokens the blocks should see.

        Args:
            pixels: normalised clips ``(B, C, T, H, W)`` (images: T = 1),
                already checked to be a whole number of patches.
            projection: the backbone's patch projection (Conv3d, or Conv2d
                for images; kernel = stride). Project only what survives
                (:func:`embed`, :func:`projection_weight`).
            pos_embed: ``(1, P + N, E)`` position embedding whose last ``N``
                rows are the full grid's, flattened as
                ``t*H'*W' + h*W' + w`` (``P``: prefix rows, 0 for VideoMAE;
                the tensor itself, so that module hooks can wrap it).
            track_source: also fill ``state.source``.

        Returns:
            Tokens ``(B, N', E)`` with position embedding added, and their
            state (``size``: patches per token, None while each is one).
        """
        raise NotImplementedError

    def tokens_out(self, grid: Sequence[int]) -> int:
        """Tokens the first block gets from the ``(T', H', W')`` token
        ``grid`` (at most, where it depends on the pixels). The default
        claims every token; reducers override it so that the backbone
        checks their budget at build time.

        Raises:
            ValueError: naming the field whose budget this grid cannot
                spend (a window larger than the grid, say).
        """
        return math.prod(grid)

    def macs(self, grid: Sequence[int], tokens: int, track_source: bool,
             widths: Widths) -> Tuple[int, int, bool]:
        """In closed form (:mod:`.costs`), for the ``grid`` it reduces to
        ``tokens``: the patches it projects, its own multiply-accumulates,
        and whether its tokens carry sizes. The default: every patch
        projected, nothing else."""
        return math.prod(grid), 0, False


# --------------------------------------------------------------------------
# Prefix tokens: kept out of every block reducer
# --------------------------------------------------------------------------
Join = Callable[[Tensor, TokenState], Tuple[Tensor, TokenState]]


def _joined(x: Tensor, state: TokenState) -> Tuple[Tensor, TokenState]:
    return x, state


def split_prefix(x: Tensor, state: TokenState,
                 prefix: int) -> Tuple[Tensor, TokenState, Join]:
    """The tokens after the first ``prefix`` of ``x`` with their state, and
    the function that puts the prefix tokens back before reduced ones."""
    if not prefix:
        return x, state, _joined
    size = state.sizes_like(x)
    source = None if state.source is None else state.source[:, prefix:]
    prefix_x, prefix_size = x[:, :prefix], size[:, :prefix]
    prefix_source = None if state.source is None else \
        state.source[:, :prefix]

    def join(patches: Tensor,
             patch_state: TokenState) -> Tuple[Tensor, TokenState]:
        sizes = patch_state.sizes_like(patches)
        joined_source = None
        if patch_state.source is not None:
            joined_source = torch.cat([prefix_source, patch_state.source], 1)
        return torch.cat([prefix_x, patches], 1), TokenState(
            size=torch.cat([prefix_size.to(sizes.dtype), sizes], 1),
            source=joined_source, padded=patch_state.padded)

    return x[:, prefix:], TokenState(size=size[:, prefix:], source=source,
                                     padded=state.padded), join


class BlockReducer(Reducer):
    """Reduces the tokens inside a block, between attention and MLP.

    :meth:`bind` tells it the backbone's depth and its ``prefix`` tokens
    (class, distillation, registers), which it never removes: a budget and
    a capacity count the tokens after them (:meth:`patch_capacity`).
    """

    #: Whether it handles padded batches (from an input reducer that may pad)
    #: so that a clip's result is the same alone and in a batch.
    supports_padding = False
    #: Whether clips may leave a block with different numbers of tokens
    #: (an adaptive budget): a batch is then packed
    #: (:mod:`mmtokred.ops.packed`).
    variable_length = False
    prefix = 0

    def bind(self, depth: int, prefix: int = 0) -> None:
        """Called once by the backbone, at build time: its depth and how
        many prefix tokens come before the patch tokens."""
        self.depth, self.prefix = depth, prefix

    def requested(self, block_index: int) -> int:
        """Tokens block ``block_index`` is configured to remove. The default
        claims none; reducers with a budget override it and
        :meth:`patch_capacity`, so that the backbone checks the budget."""
        return 0

    def patch_capacity(self, patches: int) -> int:
        """The most tokens a block can remove of ``patches`` tokens after
        the prefix."""
        return patches

    def capacity(self, block_index: int, tokens: int) -> int:
        """The most tokens block ``block_index`` can remove of ``tokens``
        (prefix included)."""
        return max(self.patch_capacity(tokens - self.prefix), 0)

    def macs(self, tokens: int, removed: int,
             widths: Widths) -> Tuple[int, bool]:
        """In closed form (:mod:`.costs`): its own multiply-accumulates in a
        block that removes ``removed`` (> 0) of ``tokens``, and whether the
        tokens then carry sizes. The default: none, sizes."""
        return 0, True

    def capacity_note(self) -> str:
        """What else than ``r`` bounds the capacity, for the error that
        refuses a budget ('' where nothing does)."""
        return ''

    def removal(self, block_index: int, tokens: int) -> int:
        """Tokens block ``block_index`` removes of ``tokens``: the budget,
        capped at the capacity (the backbone reports every cap)."""
        return min(self.requested(block_index),
                   self.capacity(block_index, tokens))

    def forward(self, x: Tensor, attn: AttentionInputs, state: TokenState,
                block_index: int) -> Tuple[Tensor, TokenState]:
        """Return the reduced tokens of block ``block_index``.

        Args:
            x: tokens ``(B, N, C)`` after the attention residual, the prefix
                first.
            attn: that block's attention inputs.
            state: what the tokens stand for (``size`` None: all ones).
            block_index: position of the block, from 0.
        """
        if state.lengths is None and self.variable_length and x.shape[0] > 1:
            # Clips will leave with different lengths: packed from here on.
            x, state = pack_equal(x, state)
            attn = attn.packed()
        if state.lengths is not None:
            return self.forward_packed(x, attn, state, block_index)
        r = self.removal(block_index, x.shape[1])
        if r == 0:
            return x, state
        return self.reduce(x, attn, state, block_index, r)

    def forward_packed(self, x: Tensor, attn: AttentionInputs,
                       state: TokenState,
                       block_index: int) -> Tuple[Tensor, TokenState]:
        """:meth:`forward` of a packed batch: each clip reduced on its own,
        as it would be alone (its own budget cap; an empty clip stays
        empty), packed again."""
        if self.requested(block_index) == 0:  # no clip loses a token here
            return x, state
        out = [self.forward(*clip, block_index) if clip[0].shape[1] else
               (clip[0], clip[2]) for clip in packed_clips(x, attn, state)]
        return packed_cat(*zip(*out))

    def reduce(self, x: Tensor, attn: AttentionInputs, state: TokenState,
               block_index: int, r: int) -> Tuple[Tensor, TokenState]:
        """Remove ``r`` (> 0, within the capacity) tokens of ``x``."""
        raise NotImplementedError

    def without_prefix(self, x: Tensor,
                       state: TokenState) -> Tuple[Tensor, TokenState, Join]:
        """The tokens after the prefix, their state, and the function that
        joins the prefix back (:func:`split_prefix`)."""
        return split_prefix(x, state, self.prefix)


def packed_clips(x: Tensor, attn: AttentionInputs, state: TokenState
                 ) -> List[Tuple[Tensor, AttentionInputs, TokenState]]:
    """Each clip's tokens, attention inputs and state of a packed batch
    (views), as a block reducer takes one clip alone."""
    lengths = state.lengths

    def clips(t: Optional[Tensor], dim: int = 1) -> List:
        return [None] * len(lengths) if t is None else \
            split_clips(t, lengths, dim)

    return [(x_i, AttentionInputs(q, k, v, attn.scale, bias),
             TokenState(size=size, source=source))
            for x_i, q, k, v, bias, size, source in zip(
                clips(x), clips(attn.q, 2), clips(attn.k, 2),
                clips(attn.v, 2), clips(attn.key_bias), clips(state.size),
                clips(state.source))]


class TokenReduction(nn.Module):
    """What a backbone's ``token_reduction`` config asks for: the ``input``
    and ``blocks`` reducers (submodules, so they follow the backbone's
    device) and the switches. A backbone holds one, as
    ``token_reduction``."""

    def __init__(self, input: Optional[InputReducer] = None,
                 blocks: Optional[BlockReducer] = None,
                 proportional_attention: bool = False,
                 track_source: bool = False, packed: bool = True) -> None:
        super().__init__()
        self.input = input
        self.blocks = blocks
        self.proportional_attention = proportional_attention
        self.track_source = track_source
        self.packed = packed

    @property
    def reducers(self) -> List[Reducer]:
        """The reducers that are set, input stage first."""
        return [r for r in (self.input, self.blocks) if r is not None]

    @property
    def may_pad(self) -> bool:
        """Whether the input stage gives clips their own token counts."""
        return self.input is not None and self.input.may_pad

    @property
    def adds_key_bias(self) -> bool:
        """Whether attention adds a per-key bias: proportional attention's
        log sizes, or the padding of clips of different lengths."""
        return self.proportional_attention or (not self.packed
                                               and self.may_pad)

    @property
    def runs_packed(self) -> bool:
        """Whether a batch of clips runs packed: its reducers give clips
        their own token counts (a threshold) and ``packed`` is on."""
        return self.packed and (self.may_pad or (
            self.blocks is not None and self.blocks.variable_length))

    def plan(self, grid: Sequence[int], depth: int,
             prefix: int = 0) -> TokenPlan:
        """The tokens every block sees on the token ``grid``."""
        return plan_tokens(self.input, self.blocks, grid, depth, prefix)

    def budget_error(self, plan: TokenPlan, seen: str) -> ValueError:
        """The error refusing a block budget the blocks cannot spend
        (``seen``: on what, e.g. 'in the configured clips (...)')."""
        note = self.blocks.capacity_note()
        return ValueError(
            f'token_reduction.blocks: {type(self.blocks).__name__} asks for '
            f'more tokens than the blocks see {seen}: '
            f'{plan.describe_caps()}. Lower r'
            + (f' or {note}' if note else ''))


def build_token_reduction(cfg: Optional[Dict], depth: int, prefix: int = 0,
                          build: Builder = build_reducer,
                          packing: bool = True) -> TokenReduction:
    """Build the reducers named by a backbone's ``token_reduction``.

    Args:
        cfg: ``dict(input=..., blocks=..., proportional_attention=...,
            track_source=..., packed=...)`` or None.
        depth: blocks of the backbone; prefix: its prefix tokens.
        build: turns a stage's config dict into a reducer.
        packing: whether the backbone can run packed batches (the default
            of ``packed``).
    """
    if cfg is None:
        return TokenReduction(packed=packing)
    if not isinstance(cfg, dict):
        raise TypeError('token_reduction must be None or a dict with the keys '
                        f'{STAGES + SWITCHES}, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(STAGES + SWITCHES))
    if unknown:
        raise ValueError(
            f'token_reduction has unknown keys {unknown}; allowed: '
            "'input' (a reducer of the pixels before the first block), "
            "'blocks' (a reducer called inside every block), "
            "'proportional_attention', 'track_source' and 'packed' (bools)")
    for switch in SWITCHES:
        if not isinstance(cfg.get(switch, False), bool):
            raise ValueError(f'token_reduction.{switch} must be True or '
                             f'False, got {cfg[switch]!r}')
    packed = cfg.get('packed', packing)
    if packed and not packing:
        raise ValueError('token_reduction.packed=True: this backbone pads '
                         'clips of different lengths and cannot pack them; '
                         'leave packed out or set it False')
    built = []
    for stage, base in zip(STAGES, (InputReducer, BlockReducer)):
        stage_cfg = cfg.get(stage)
        if stage_cfg is None:
            built.append(None)
            continue
        try:
            reducer = build(stage_cfg)
        except ValueError as error:  # name the stage the option is of
            raise ValueError(f'token_reduction.{stage}: {error}') from error
        if not isinstance(reducer, base):
            raise TypeError(
                f'token_reduction.{stage} must build a {base.__name__}, but '
                f'{stage_cfg.get("type")!r} built a {type(reducer).__name__}')
        built.append(reducer)
    if built[1] is not None:
        built[1].bind(depth, prefix)
        if built[1].variable_length and not packed:
            raise ValueError(
                f'token_reduction.blocks: {type(built[1]).__name__} leaves '
                'clips with different numbers of tokens, which run packed: '
                'set token_reduction.packed=True'
                + ('' if packing else ' (a backbone that can pack: the '
                   'VideoMAE one), or give it a fixed budget'))
    if built[0] is not None and built[0].may_pad:
        built[0].packs = packed
    if built[0] is not None and built[0].may_pad and built[1] is not None \
            and not packed and not built[1].supports_padding:
        raise ValueError(
            f'token_reduction.blocks: {type(built[1]).__name__} cannot follow '
            f'an input stage that pads the batch ({type(built[0]).__name__} '
            'in threshold mode); set token_reduction.packed=True or give the '
            'input stage a fixed budget')
    return TokenReduction(built[0], built[1],
                          cfg.get('proportional_attention', False),
                          cfg.get('track_source', False), packed)
