"""The measured work, and how it is timed: shared by every benchmark.

The forwards measured here synchronise with the GPU after the model has
run, so that wall time covers the work; nothing is timed inside a model."""
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .cpu import cpu_model

#: ``--dtype`` names: what the weights and the clips are cast to.
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16,
          'fp16': torch.float16}


def check_device(name: str, option: str = 'device') -> torch.device:
    """``name`` as a device the benchmarks run on: the CPU or a visible GPU.

    Raises ValueError naming ``option`` and the way out, before any model is
    built: torch's own errors come at the first ``.to(device)`` and say
    neither (``AssertionError: Torch not compiled with CUDA enabled``).
    """
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f'{option} {name}: not a device; use cpu, cuda or '
                         'cuda:N') from exc
    if device.type == 'cpu':
        return device
    if device.type != 'cuda':
        raise ValueError(f'{option} {name}: the benchmarks run on cpu or '
                         'cuda (cuda:N)')
    if torch.version.cuda is None:
        raise ValueError(f'{option} {name}: this torch ({torch.__version__}) '
                         'has no CUDA; install the CUDA build of torch or '
                         f'use {option} cpu')
    if not torch.cuda.is_available():
        raise ValueError(f'{option} {name}: this torch ({torch.__version__}) '
                         f'has CUDA {torch.version.cuda} but sees no GPU: '
                         'check the driver and CUDA_VISIBLE_DEVICES, or use '
                         f'{option} cpu')
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f'{option} {name}: {count} GPU(s) visible: use '
                         f'cuda:0 to cuda:{count - 1}')
    return device


def prepare(model: nn.Module, dtype: str = 'fp32',
            compile: bool = False) -> nn.Module:
    """Cast ``model`` to ``dtype`` and, with ``compile``, wrap its
    backbone's forward in ``torch.compile`` (parameters and state-dict keys
    stay as they are)."""
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got '
                         f'{dtype!r}')
    model.to(DTYPES[dtype])
    if compile:
        model.backbone.forward = torch.compile(model.backbone.forward)
    return model


def autocast_dtype(device_type: str) -> torch.dtype:
    """What ``amp`` computes in: fp16 on GPU, bf16 on CPU."""
    return torch.float16 if device_type == 'cuda' else torch.bfloat16


def forward_fn(model: nn.Module, inputs: Tensor,
               amp: bool) -> Callable[[], Tensor]:
    """The measured work: the recogniser's backbone and head on ``inputs``
    ``(B, views, C, T, H, W)`` (cast to the model's dtype), without data
    loading or preprocessing; ``amp``: under autocast (fp16 on GPU, bf16 on
    CPU)."""
    device_type = inputs.device.type
    dtype = autocast_dtype(device_type)
    inputs = inputs.to(next(model.parameters()).dtype)

    def forward() -> Tensor:
        with torch.inference_mode(), torch.autocast(
                device_type, dtype=dtype, enabled=amp):
            out = model(inputs, mode='tensor', stage='head')
        if device_type == 'cuda':
            torch.cuda.synchronize(inputs.device)
        return out

    return forward


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with the threads torch uses."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu ({cpu_model()}, {torch.get_num_threads()} threads)'


def interleaved_times(forwards: Dict[str, Callable], warmup: int,
                      repeats: int) -> Dict[str, List[float]]:
    """Each forward's wall time in every repetition: ``warmup`` untimed
    turns, then ``repeats`` timed ones, the forwards taking turns in each so
    that a noisy neighbour hurts all of them alike."""
    for _ in range(warmup):
        for forward in forwards.values():
            forward()
    times: Dict[str, List[float]] = {name: [] for name in forwards}
    for _ in range(repeats):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward()
            times[name].append(time.perf_counter() - start)
    return times


def seconds_per_batch(forwards: Dict[str, Callable], warmup: int,
                      repeats: int) -> Dict[str, float]:
    """Median wall time of each forward over :func:`interleaved_times`."""
    return {name: statistics.median(ts) for name, ts in
            interleaved_times(forwards, warmup, repeats).items()}


def spread(times: Sequence[float]) -> Optional[float]:
    """``(max - min) / median`` of repeated timings; None for fewer than
    two (nothing to compare)."""
    if len(times) < 2:
        return None
    return (max(times) - min(times)) / statistics.median(times)
