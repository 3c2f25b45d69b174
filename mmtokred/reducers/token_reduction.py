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

Three switches apply to the whole backbone:

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
from typing import Dict, List, Optional, Sequence

from torch import nn

from ..ops import TokenPlan, plan_tokens
from .block_stage import BlockReducer
from .input_stage import InputReducer
from .reducer import Reducer
from .registry import Builder, build_reducer

STAGES = ('input', 'blocks')
SWITCHES = ('proportional_attention', 'track_source', 'packed')


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
