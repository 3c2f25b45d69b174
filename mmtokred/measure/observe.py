"""Watching a backbone from outside: forward hooks that tools install and
remove. The model only computes; what it did with its tokens (how many
entered each block, their state) and where its time went are read here.

The observers of a
:class:`~mmtokred.models.TokenReductionVisionTransformer` are context
managers::

    with TokenRecorder(backbone) as tokens, ReducerTimer(backbone) as timer:
        backbone(clips)
    tokens.tokens_per_block, tokens.final_state, timer.seconds

:func:`tokens_through_blocks` counts the tokens of any stack of blocks (a
timm ViT's, patched or not).
"""
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..ops import TokenState


def synchronized_now(x: Optional[Tensor] = None) -> float:
    """Wall time after the work queued on ``x``'s device is done."""
    if x is not None and x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


class _Hooks:
    """Hooks installed on entering, removed on leaving."""

    def __init__(self) -> None:
        self._handles: List = []

    def _install(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._install()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class TokenRecorder(_Hooks):
    """What the last forward pass did with the tokens.

    Attributes:
        tokens_per_block: tokens that entered each block (of a packed
            batch: its longest clip's, what padding would carry).
        clip_tokens_per_block: the tokens of each clip that entered each
            block, a tuple per block.
        input_state: the :class:`~mmtokred.ops.TokenState` entering the
            first block (after the input stage).
        block_states: the state leaving each block of ``states_of``.
        final_state: the state leaving the last block (sizes, and the source
            map where the backbone tracks it).

    Args:
        backbone: the backbone to watch.
        states_of: blocks whose outgoing state to keep besides the last.
    """

    def __init__(self, backbone: nn.Module,
                 states_of: Sequence[int] = ()) -> None:
        super().__init__()
        self.blocks = list(backbone.blocks)
        self.states_of = set(states_of) | {len(self.blocks) - 1}
        self.tokens_per_block: List[int] = []
        self.clip_tokens_per_block: List[Tuple[int, ...]] = []
        #: The tokens of each clip leaving the last block.
        self.clip_tokens_out: Tuple[int, ...] = ()
        self.input_state: Optional[TokenState] = None
        self.block_states: Dict[int, TokenState] = {}

    @property
    def final_state(self) -> Optional[TokenState]:
        return self.block_states.get(len(self.blocks) - 1)

    def tokens_of_clips(self) -> List[List[int]]:
        """Per clip of the last pass: the tokens entering every block, then
        those leaving the last (what ``ShapeFlops.clip_gflops`` counts)."""
        return [list(clip) for clip in zip(*self.clip_tokens_per_block,
                                           self.clip_tokens_out)]

    def _install(self) -> None:
        # Hooks must return None: a value would replace inputs or outputs.
        def entering(index: int):
            def hook(module, args):
                if index == 0:
                    self.tokens_per_block = []
                    self.clip_tokens_per_block = []
                    self.block_states = {}
                    self.input_state = args[1]
                x, state = args[0], args[1]
                lengths = state.lengths or (x.shape[1], ) * x.shape[0]
                self.clip_tokens_per_block.append(tuple(lengths))
                self.tokens_per_block.append(max(lengths, default=0))
            return hook

        def leaving(index: int):
            def hook(module, args, output):
                if index in self.states_of:
                    self.block_states[index] = output[1]
                if index == len(self.blocks) - 1:
                    x, state = output
                    self.clip_tokens_out = tuple(
                        state.lengths or (x.shape[1], ) * x.shape[0])
            return hook

        for index, block in enumerate(self.blocks):
            self._handles.append(
                block.register_forward_pre_hook(entering(index)))
            self._handles.append(block.register_forward_hook(leaving(index)))


class ModuleTimer(_Hooks):
    """Wall seconds spent in each named module, summed over its calls
    (synchronised with CUDA before and after each: slower, for measurement
    only).

    Attributes:
        seconds: name -> seconds since the last :meth:`reset`.
    """

    def __init__(self, modules: Dict[str, Optional[nn.Module]]) -> None:
        super().__init__()
        self.modules = {name: m for name, m in modules.items()
                        if m is not None}
        self.seconds: Dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.seconds = {name: 0. for name in self.modules}

    def _install(self) -> None:
        starts: Dict[str, List[float]] = {name: [] for name in self.modules}

        def first_tensor(values) -> Optional[Tensor]:
            values = values if isinstance(values, (tuple, list)) else (
                values, )
            return next((v for v in values if isinstance(v, Tensor)), None)

        def before(name: str):
            def hook(module, args):
                starts[name].append(synchronized_now(first_tensor(args)))
            return hook

        def after(name: str):
            def hook(module, args, output):
                self.seconds[name] += synchronized_now(
                    first_tensor(output)) - starts[name].pop()
            return hook

        for name, module in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(
                before(name)))
            self._handles.append(module.register_forward_hook(after(name)))


class ReducerTimer(ModuleTimer):
    """Seconds in the backbone's token reducers (``input`` and ``blocks``)
    and in the whole backbone (``backbone``); :attr:`fraction` is the share
    of the reducers."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(dict(backbone=backbone,
                              input=backbone.token_reduction.input,
                              blocks=backbone.token_reduction.blocks))

    @property
    def fraction(self) -> float:
        spent = sum(s for name, s in self.seconds.items()
                    if name != 'backbone')
        return spent / self.seconds['backbone']


def tokens_through_blocks(blocks: Sequence[nn.Module],
                          forward: Callable[[], object]) -> List[int]:
    """Tokens entering the first of ``blocks``, then leaving each, in one
    call of ``forward``; a block's output is its tokens ``(B, N, C)`` or a
    tuple that starts with them."""
    counts: List[int] = []

    def entering(module, args):
        counts.append(args[0].shape[1])

    def leaving(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        counts.append(out.shape[1])

    handles = [blocks[0].register_forward_pre_hook(entering)]
    handles += [block.register_forward_hook(leaving) for block in blocks]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    return counts
