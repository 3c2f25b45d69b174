"""What a backbone supplies to reduce tokens: the adapter contract.

A backbone is a ViT module that also subclasses
:class:`TokenReducingBackbone`, whose blocks are
:class:`~.block.TokenReducingBlock` s (with
:class:`~.attention.TokenReducingAttention`), and which sets
``configured_grid`` and calls :meth:`~TokenReducingBackbone.
set_token_reduction` once its modules exist. It says how it embeds
(:meth:`~TokenReducingBackbone.embed`, or for an input reducer
``patch_projection`` and :meth:`~TokenReducingBackbone.position_embedding`,
then :meth:`~TokenReducingBackbone.join_prefix`), which blocks it has and
its final ``norm``; its ``forward`` pools what
:meth:`~TokenReducingBackbone.forward_tokens` returns with
:mod:`.pooling`. The token loop, the budget checks and packing are the
core's. docs/core.md walks through a new backbone.
"""
import warnings
from typing import Dict, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import TokenState
from ..reducers import TokenReduction, build_token_reduction
from .token_loop import embed_tokens, ready_state, run_blocks

Grid = Tuple[int, int, int]


class TokenReducingBackbone:
    """The contract of a token-reducing backbone, and the token loop.

    Attributes a backbone sets:
        blocks: its :class:`~.block.TokenReducingBlock` s, in order.
        norm: the norm after the last block.
        configured_grid: the ``(T', H', W')`` token grid of the inputs it
            was built for (images: T' = 1); budgets are refused on it at
            build time.
        num_prefix_tokens: tokens before the patch tokens (class,
            distillation, registers), never reduced.
        patch_projection: the patch projection (a Conv3d over tubelets, or
            a Conv2d over patches), what an input reducer projects with.

    Attributes the core sets (:meth:`set_token_reduction`):
        token_reduction: the :class:`~mmtokred.reducers.TokenReduction`.
        capped_budgets: token grids other than the configured one whose
            block budgets were capped, each with its warning (given once).
    """

    blocks: Sequence[nn.Module]
    norm: nn.Module
    configured_grid: Grid
    num_prefix_tokens: int = 0
    patch_projection: nn.Module
    token_reduction: TokenReduction
    capped_budgets: Dict[Grid, str]

    # ------------------------------------------------------------------
    # What the backbone supplies
    # ------------------------------------------------------------------
    def token_grid(self, pixels: Tensor) -> Grid:
        """Check an input batch and return its ``(T', H', W')`` token
        grid."""
        raise NotImplementedError

    def embed(self, pixels: Tensor, grid: Grid) -> Tensor:
        """Every token ``(B, P + N, C)``, prefix first, position embedded:
        the stock embedding, what the blocks get without an input
        reducer."""
        raise NotImplementedError

    def position_embedding(self, grid: Grid) -> Tensor:
        """``(1, P + N, C)`` position embedding whose last ``N`` rows are
        the grid's (``P``: prefix rows, 0 where prefix tokens have none),
        as an input reducer takes it."""
        raise NotImplementedError

    def clips(self, pixels: Tensor) -> Tensor:
        """The input as ``(B, C, T, H, W)`` clips, as an input reducer
        takes it (an image is a clip of one frame)."""
        return pixels

    def join_prefix(self, tokens: Tensor) -> Tensor:
        """An input reducer's tokens ``(B, N', C)`` with the prefix tokens
        before them."""
        return tokens

    def before_blocks(self, x: Tensor) -> Tensor:
        """What the stock model does between embedding and the first block
        (dropout, a pre-norm)."""
        return x

    # ------------------------------------------------------------------
    # What the core gives
    # ------------------------------------------------------------------
    def set_token_reduction(self, token_reduction: Optional[Dict]) -> None:
        """Replace the token reduction (a ``token_reduction`` config, None
        for none); the weights stay.

        Raises:
            ValueError: for a block budget the blocks cannot spend on the
                configured inputs, with every cap named.
        """
        prefix = self.num_prefix_tokens
        reduction = build_token_reduction(token_reduction, len(self.blocks),
                                          prefix)
        if prefix and reduction.may_pad:
            # Prefix tokens are joined to a padded batch, packed after.
            reduction.input.packs = False
        plan = reduction.plan(self.configured_grid, len(self.blocks), prefix)
        if plan.caps:
            raise reduction.budget_error(
                plan, 'in the configured clips (token grid '
                f'{self.configured_grid}'
                + (f', {prefix} prefix tokens included)' if prefix else ')'))
        self.capped_budgets = {}
        self.token_reduction = reduction.to(
            next(iter(self.parameters())).device)

    def check_budget(self, grid: Grid) -> None:
        """Check the reducers on clips of another size than configured: an
        input budget this grid cannot hold is an error; block budgets over
        what the blocks see are capped, with one warning per grid."""
        if grid == self.configured_grid:
            return
        reduction = self.token_reduction
        plan = reduction.plan(grid, len(self.blocks), self.num_prefix_tokens)
        if plan.caps and grid not in self.capped_budgets:
            self.capped_budgets[grid] = (
                f'{type(reduction.blocks).__name__} budget capped for '
                f'clips of token grid {grid} (configured: '
                f'{self.configured_grid}): {plan.describe_caps()}')
            warnings.warn(self.capped_budgets[grid], stacklevel=3)

    def forward_tokens(self, pixels: Tensor) -> Tuple[Tensor, TokenState]:
        """Tokens after the final norm ``(B, N', C)`` (packed:
        ``(1, sum, C)``, see ``state.lengths``) and their state."""
        grid = self.token_grid(pixels)
        self.check_budget(grid)
        reduction = self.token_reduction
        x, state = ready_state(*embed_tokens(self, pixels, grid), reduction)
        x, state = run_blocks(self.blocks, self.before_blocks(x), state,
                              reduction)
        return self.norm(x), state
