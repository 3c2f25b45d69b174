"""The input stage: a reducer that turns pixels into (fewer) tokens before
the first block, and the patch projection as it sees it."""
import math
from typing import Sequence, Tuple

from torch import Tensor, nn

from ..ops import TokenState
from .costs import Widths
from .reducer import Reducer


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
