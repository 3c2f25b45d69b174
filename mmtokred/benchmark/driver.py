"""The one benchmark skeleton: models of one family side by side.

A family adapter (:class:`Family`: video in :mod:`.video`, image in
:mod:`.image`) says how its models run, what their tokens are and how the
memory probe rebuilds them; :func:`measure` does the rest for every family:
the models moved and cast, their FLOPs and tokens counted on one sample,
timed taking turns (:func:`~mmtokred.measure.side_by_side.side_by_side`),
their peak memory probed (in a fresh process on CPU), their rates, the
machine's limits and their ratios to the reference and to dense.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import torch
from torch import Tensor, nn

from ..measure.flops import count_gflops
from ..measure.forward import (DTYPES, autocast_dtype, prepare,
                               seconds_per_batch)
from ..measure.memory import MemoryProbe, allocated_bytes
from ..measure.peak import machine_limits
from ..measure.side_by_side import SideBySide, side_by_side

Forward = Callable[[], Tensor]


def check_counts(batch_size: int, warmup: int, repeats: int) -> None:
    """Raise ValueError naming the first count out of its range."""
    for name, value, low in (('batch_size', batch_size, 1),
                             ('warmup', warmup, 0), ('repeats', repeats, 1)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')


def check_precision(dtype: str, amp: bool) -> None:
    """Raise ValueError for a dtype not in ``DTYPES`` or ``amp`` with a
    dtype other than fp32 (autocast runs fp32 weights)."""
    if dtype not in DTYPES:
        raise ValueError(f'dtype must be one of {tuple(DTYPES)}, got '
                         f'{dtype!r}')
    if amp and dtype != 'fp32':
        raise ValueError(f'amp autocasts fp32 weights; it cannot be combined '
                         f'with dtype={dtype!r}')


def random_inputs(batch_size: int, shape: Sequence[int]) -> Tensor:
    """``batch_size`` samples of ``shape``, the same in every run."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, *shape, generator=generator)


def dtype_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16' or 'fp16', as ``--dtype`` names them."""
    return next(name for name, value in DTYPES.items() if value == dtype)


@dataclass(frozen=True)
class Setting:
    """How one model runs: weights and inputs cast to ``dtype``, under
    autocast with ``amp``, its backbone compiled with ``compile``."""
    dtype: str = 'fp32'
    amp: bool = False
    compile: bool = False


@dataclass(frozen=True)
class Naming:
    """The result keys of a family: per ``unit`` (``gflops_per_clip``,
    ``clips_per_s``), ratios ``_vs_`` the ``reference`` model, its
    ``tokens`` and its ``turns`` (each timed turn's seconds)."""
    unit: str
    reference: str
    tokens: str
    turns: str = 'seconds_per_turn'


class Family(Protocol):
    """What :func:`measure` asks of a family of models."""

    naming: Naming
    #: ``'module:function'`` that rebuilds one model's forward from its
    #: spec in the memory probe's fresh process.
    probe_builder: str

    def setting(self, name: str) -> Setting:
        """How the model ``name`` runs."""

    def forward(self, model: nn.Module, inputs: Tensor,
                setting: Setting) -> Forward:
        """The measured work of ``model`` on ``inputs``."""

    def tokens(self, name: str, model: nn.Module,
               forward: Forward) -> Optional[List[int]]:
        """The tokens through the blocks in ``forward`` (one sample)."""

    def extras(self, name: str, model: nn.Module, forward: Forward,
               repeats: int) -> Dict:
        """The family's own figures of one model (untimed passes)."""

    def width(self, model: nn.Module) -> int:
        """The token width of the models' blocks."""

    def probe_specs(self, folder: Path, inputs: Tensor,
                    models: Dict[str, nn.Module]) -> Dict[str, Dict]:
        """Save what the fresh processes load under ``folder``; each
        model's spec for :attr:`probe_builder`."""


@dataclass
class Measurement:
    """What :func:`measure` found: per model its ``figures``, its first
    ``outputs`` (on the CPU, in fp32), the timed ``run`` and the machine's
    ``limits`` per dtype the models computed in."""
    figures: Dict[str, Dict]
    outputs: Dict[str, Tensor]
    run: SideBySide
    limits: Dict[str, Dict] = field(default_factory=dict)


def measure(family: Family, models: Dict[str, nn.Module], inputs: Tensor,
            *, device: torch.device, warmup: int, repeats: int,
            progress: Callable[[str], None] = lambda line: None
            ) -> Measurement:
    """Run ``models`` (the reference first) on ``inputs`` side by side on
    ``device``: ``warmup`` untimed turns, ``repeats`` timed ones."""
    naming = family.naming
    device_inputs = inputs.to(device)
    settings = {name: family.setting(name) for name in models}
    forwards, resident = {}, {}
    for name, model in models.items():
        held = allocated_bytes(device)
        prepare(model.to(device), settings[name].dtype)
        forwards[name] = family.forward(model, device_inputs, settings[name])
        resident[name] = allocated_bytes(device) - held
    outputs = {name: forward().float().cpu()
               for name, forward in forwards.items()}
    figures: Dict[str, Dict] = {}
    for name, model in models.items():
        one = family.forward(model, device_inputs[:1], settings[name])
        math = autocast_dtype(device.type) if settings[name].amp else \
            DTYPES[settings[name].dtype]
        figures[name] = {'math_dtype': dtype_name(math),
                         f'gflops_per_{naming.unit}': count_gflops(one),
                         naming.tokens: family.tokens(name, model, one)}
    for name, model in models.items():
        figures[name].update(family.extras(name, model, forwards[name],
                                           repeats))
    compiled = [name for name in models if settings[name].compile]
    for name in compiled:
        prepare(models[name], settings[name].dtype, compile=True)
    if compiled:
        # The first warm-up pass compiles: run it here, so its time can be
        # told, before the timed turns.
        count = f"{len(compiled)} model{'s' * (len(compiled) > 1)}"
        progress(f'compiling {count} with torch.compile (the first pass '
                 'takes up to a minute per model, less from the compile '
                 'cache of an earlier run)...')
        compiling = sum(seconds_per_batch(forwards, 0, 1).values())
        progress(f'compiled in {compiling:.0f} s')
    probe = MemoryProbe(family.probe_builder, lambda folder: family
                        .probe_specs(folder, inputs, models), resident)
    run = side_by_side(forwards, max(warmup - bool(compiled), 0), repeats,
                       device, probe)
    _rates(figures, run, naming, len(inputs))
    limits = _limits(family, models, figures, device, len(inputs))
    _ratios(figures, run, naming)
    return Measurement(figures, outputs, run, limits)


def _rates(figures: Dict[str, Dict], run: SideBySide, naming: Naming,
           batch_size: int) -> None:
    """Each model's times and peaks, samples and GFLOP/s."""
    for name, fig in figures.items():
        fig.update(run.figures(name))
        fig[naming.turns] = fig.pop('seconds_per_turn')
        median = fig['seconds_per_batch']
        fig[f'{naming.unit}s_per_s'] = batch_size / median
        # GFLOPs per sample count multiply-accumulates (the model zoo's
        # convention); a machine's peak counts 2 FLOPs per multiply-add.
        fig['gflops_per_s'] = \
            2 * fig[f'gflops_per_{naming.unit}'] * batch_size / median


def _limits(family: Family, models: Dict[str, nn.Module],
            figures: Dict[str, Dict], device: torch.device,
            batch_size: int) -> Dict[str, Dict]:
    """The machine's limits at the MLP shape of the dense tokens (dense's,
    else the first model's that counts tokens), and each model's share of
    the achievable rate."""
    tokens = family.naming.tokens
    counted = [name for name, fig in figures.items()
               if fig[tokens] is not None]
    dense = 'dense' if 'dense' in counted else counted[0]
    limits = machine_limits(
        {fig['math_dtype']: DTYPES[fig['math_dtype']]
         for fig in figures.values()}, device,
        batch_size * figures[dense][tokens][0],
        family.width(next(iter(models.values()))))
    for fig in figures.values():
        fig['share_of_achievable'] = fig['gflops_per_s'] / limits[
            fig['math_dtype']]['achievable']['gflops']
    return limits


def _ratios(figures: Dict[str, Dict], run: SideBySide,
            naming: Naming) -> None:
    """Each model's figures against the reference and, where it is neither
    nor dense, against dense."""
    reference, gflops = naming.reference, f'gflops_per_{naming.unit}'
    for name, fig in figures.items():
        fig.update({
            f'speedup_vs_{reference}': run.speedup(name, reference),
            'speedup_range': list(run.speedup_range(name, reference)),
            f'flops_ratio_vs_{reference}':
            fig[gflops] / figures[reference][gflops],
            f'peak_mem_ratio_vs_{reference}':
            run.memory_ratio(name, reference),
            f'total_mem_ratio_vs_{reference}':
            run.memory_ratio(name, reference, 'total_mib')})
        if 'dense' in figures and name not in (reference, 'dense'):
            flops_ratio = fig[gflops] / figures['dense'][gflops]
            speedup = run.speedup(name, 'dense')
            fig.update(speedup_vs_dense=speedup,
                       flops_ratio_vs_dense=flops_ratio,
                       bound_share=speedup * flops_ratio)
