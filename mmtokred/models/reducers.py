"""The two places where a token reducer plugs into the backbone.

``token_reduction=dict(input=..., blocks=...)`` of
:class:`~mmtokred.models.TokenReductionVisionTransformer` names one reducer
for each place, each a config dict of a module registered in mmaction's
``MODELS`` (either may be left out):

- ``input``: an :class:`InputReducer`. It sees the normalised clip before the
  patch projection and decides which tokens the first block gets, so that
  every block, and the peak memory, see fewer tokens.
- ``blocks``: a :class:`BlockReducer`. Every block calls it between the
  attention residual and the MLP, with that block's queries, keys and values
  (:class:`AttentionInputs`) for similarity and importance scores.

Both return the reduced tokens with their :class:`~mmtokred.ops.TokenState`,
so sizes are tracked in one place and pooling stays size-weighted.

Two switches apply to the whole backbone:

- ``proportional_attention`` (default False): add log(size) of each key to the
  attention logits. ToMe's authors turn it off for MAE-family models used off
  the shelf, like VideoMAE.
- ``track_source`` (default False): keep the ``(B, N, N0)`` map of which
  input tubelets each token holds, for pictures.
"""
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmaction.registry import MODELS
from torch import Tensor, nn

from ..ops import TokenState

STAGES = ('input', 'blocks')
SWITCHES = ('proportional_attention', 'track_source')


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


def grid_of(video: Tensor, projection: nn.Conv3d) -> Tuple[int, int, int]:
    """The ``(T', H', W')`` token grid of clips ``(B, C, T, H, W)``."""
    t, h, w = (n // s for n, s in zip(video.shape[2:],
                                      projection.kernel_size))
    return t, h, w


class InputReducer(Reducer):
    """Turns a clip into (fewer) tokens before the first block."""

    #: Whether clips of one batch may keep different numbers of tokens (the
    #: batch is then padded; see ``TokenState.padded``).
    may_pad = False

    def forward(self, video: Tensor, projection: nn.Conv3d, pos_embed: Tensor,
                track_source: bool) -> Tuple[Tensor, TokenState]:
        """Embed ``video`` keeping only the tokens the blocks should see.

        Args:
            video: normalised clip ``(B, C, T, H, W)``, already checked to be
                a whole number of tubelets.
            projection: the backbone's tubelet projection (Conv3d with
                kernel = stride = tubelet shape). Project only what survives.
            pos_embed: ``(1, N, C)`` position embedding of the full
                ``(T', H', W')`` grid, flattened as ``t*H'*W' + h*W' + w``.
            track_source: also fill ``state.source``.

        Returns:
            Tokens ``(B, N', C)`` with position embedding added, and their
            state (``size``: tubelets per token, None while each is one).
        """
        raise NotImplementedError

    def tokens_out(self, grid: Sequence[int]) -> int:
        """Tokens the first block gets from clips of the ``(T', H', W')``
        token ``grid`` (at most, where it depends on the clip). The default
        claims every token; reducers override it so that the backbone
        checks their budget at build time.

        Raises:
            ValueError: naming the field whose budget this grid cannot
                spend (a window larger than the grid, say).
        """
        return math.prod(grid)


class BlockReducer(Reducer):
    """Reduces the tokens inside a block, between attention and MLP."""

    #: Whether it handles padded batches (from an input reducer that may pad)
    #: so that a clip's result is the same alone and in a batch.
    supports_padding = False

    def bind(self, depth: int) -> None:
        """Called once by the backbone, at build time, with its depth."""

    def requested(self, block_index: int) -> int:
        """Tokens block ``block_index`` is configured to remove. The default
        claims none; reducers with a budget override it and
        :meth:`capacity`, so that the backbone checks the budget."""
        return 0

    def capacity(self, block_index: int, tokens: int) -> int:
        """The most tokens block ``block_index`` can remove of ``tokens``."""
        return tokens

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
            x: tokens ``(B, N, C)`` after the attention residual.
            attn: that block's attention inputs.
            state: what the tokens stand for (``size`` None: all ones).
            block_index: position of the block, from 0.
        """
        raise NotImplementedError


class TokenReduction(NamedTuple):
    """What a backbone's ``token_reduction`` config asks for."""
    input: Optional[InputReducer] = None
    blocks: Optional[BlockReducer] = None
    proportional_attention: bool = False
    track_source: bool = False


def build_token_reduction(cfg: Optional[Dict], depth: int) -> TokenReduction:
    """Build the reducers named by a backbone's ``token_reduction``."""
    if cfg is None:
        return TokenReduction()
    if not isinstance(cfg, dict):
        raise TypeError('token_reduction must be None or a dict with the keys '
                        f'{STAGES + SWITCHES}, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(STAGES + SWITCHES))
    if unknown:
        raise ValueError(
            f'token_reduction has unknown keys {unknown}; allowed: '
            "'input' (a reducer of the tubelets before the first block), "
            "'blocks' (a reducer called inside every block), "
            "'proportional_attention' and 'track_source' (bools)")
    for switch in SWITCHES:
        if not isinstance(cfg.get(switch, False), bool):
            raise ValueError(f'token_reduction.{switch} must be True or '
                             f'False, got {cfg[switch]!r}')
    built = []
    for stage, base in zip(STAGES, (InputReducer, BlockReducer)):
        stage_cfg = cfg.get(stage)
        if stage_cfg is None:
            built.append(None)
            continue
        reducer = MODELS.build(stage_cfg)
        if not isinstance(reducer, base):
            raise TypeError(
                f'token_reduction.{stage} must build a {base.__name__}, but '
                f'{stage_cfg.get("type")!r} built a {type(reducer).__name__}')
        built.append(reducer)
    if built[1] is not None:
        built[1].bind(depth)
    if built[0] is not None and built[0].may_pad and built[1] is not None \
            and not built[1].supports_padding:
        raise ValueError(
            f'token_reduction.blocks: {type(built[1]).__name__} cannot follow '
            f'an input stage that pads the batch ({type(built[0]).__name__} '
            'in threshold mode); give the input stage a fixed budget')
    return TokenReduction(built[0], built[1],
                          cfg.get('proportional_attention', False),
                          cfg.get('track_source', False))
