"""The attention kernels chosen by measurement on the model's device, before
the loops run: never inside a forward pass."""
import math
from typing import List

from mmaction.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from .measure.forward import autocast_dtype
from .measure.kernels import choose_key_bias_mode, choose_packed_kernel
from .ops.attention import key_bias_setting
from .ops.packed_attention import packed_kernel_setting


def graded_lengths(tokens: int, clips: int) -> List[int]:
    """``clips`` token counts from a quarter of ``tokens`` up to all of
    them, evenly spaced: a batch as a threshold budget leaves it."""
    if clips == 1:
        return [tokens]
    return [round(tokens * (0.25 + 0.75 * i / (clips - 1)))
            for i in range(clips)]


@HOOKS.register_module()
class AttentionKernelHook(Hook):
    """Before the test, validation and training loops, on the model's
    device, in its dtype (the autocast dtype where the loop runs
    ``fp16=True``: fp16 on GPU, bf16 on CPU), at its
    heads and head width and the loop's batch size:

    - where attention adds a key bias (proportional attention, padding),
      times the two ways of adding it and makes the faster the one 'auto'
      runs (:func:`~mmtokred.measure.kernels.choose_key_bias_mode`), at the
      configured clip's tokens;
    - where batches run packed (threshold budgets), times every packed
      attention kernel on clips of graded lengths and makes the fastest the
      one 'auto' runs (:func:`~mmtokred.measure.kernels.
      choose_packed_kernel`).

    Logs the times. Leaves alone what a setting fixed
    (``MMTOKRED_KEY_BIAS``, ``MMTOKRED_PACKED_ATTENTION``), and the CPU
    unless ``on_cpu`` (its rules are measured, docs/packed.md, and timing
    'flex' compiles it first).

    Args:
        repeats: timed calls of each kernel, >= 1.
        on_cpu: measure on CPU too.
    """

    priority = 'LOW'

    def __init__(self, repeats: int = 3, on_cpu: bool = False) -> None:
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f'AttentionKernelHook repeats must be an '
                             f'integer >= 1, got {repeats!r}')
        self.repeats = repeats
        self.on_cpu = on_cpu

    def before_test(self, runner) -> None:
        self._choose(runner, runner.test_loop)

    def before_val(self, runner) -> None:
        self._choose(runner, runner.val_loop)

    def before_train(self, runner) -> None:
        self._choose(runner, runner.train_loop)

    def _choose(self, runner, loop) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        reduction = getattr(backbone, 'token_reduction', None)
        if reduction is None or not hasattr(backbone, 'configured_grid'):
            return
        parameter = next(backbone.parameters())
        device = parameter.device
        if device.type == 'cpu' and not self.on_cpu:
            return
        dtype = autocast_dtype(device.type) if getattr(loop, 'fp16', False) \
            else parameter.dtype
        clips = getattr(loop.dataloader, 'batch_size', None) or 1
        heads = backbone.blocks[0].attn.num_heads
        dim = backbone.embed_dims // heads
        tokens = math.prod(backbone.configured_grid)
        where = f'on {device} in {dtype}'
        if reduction.adds_key_bias and key_bias_setting() == 'auto':
            mode, ms = choose_key_bias_mode((clips, heads, tokens, dim),
                                            device, dtype, self.repeats)
            runner.logger.info(
                f'attention key bias {where}: {mode}, the faster at '
                f'{clips} clips of {tokens} tokens ({_times(ms)})')
        if reduction.runs_packed and clips > 1 and \
                packed_kernel_setting() == 'auto':
            lengths = graded_lengths(tokens, clips)
            kernel, ms = choose_packed_kernel(
                lengths, heads, dim, device, dtype,
                reduction.proportional_attention, self.repeats)
            runner.logger.info(
                f'packed attention {where}: {kernel}, the fastest one call '
                f'of {clips} clips of {min(lengths)} to {max(lengths)} '
                f'tokens ({_times(ms)})')


def _times(ms) -> str:
    return ', '.join(f'{name} {t:.2f} ms' for name, t in ms.items()
                     if t is not None)
