"""Several forwards measured side by side: the one routine of the
benchmark driver (:mod:`mmtokred.benchmark.driver`: the video and the image
families), the engines benchmark (:mod:`mmtokred.benchmark.engines`) and
the threshold benchmark (:mod:`mmtokred.benchmark.threshold`).

The forwards take turns in every repetition, after warm-up turns, so that a
noisy neighbour slows them alike (:func:`.forward.interleaved_times`); each
gets its median and spread, and each its ratios against a reference: the
speedup (ratio of medians) with the lowest and highest of the turns' paired
ratios, and the ratios of the peak memories where a
:class:`~.memory.MemoryProbe` measured them.
"""
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .forward import interleaved_times, spread
from .memory import MemoryProbe


@dataclass
class SideBySide:
    """What :func:`side_by_side` measured.

    Attributes:
        seconds: per forward, its wall time in each timed turn.
        peaks: per forward, ``activation_mib`` and ``total_mib``
            (:func:`~.memory.peak_memory`); empty where not measured.
    """

    seconds: Dict[str, List[float]]
    peaks: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def spread(self, name: str) -> Optional[float]:
        """``(max - min) / median`` of the turns' times; None for one turn
        (nothing to compare: unknown, printed ``?`` by
        :func:`format_spread`)."""
        return spread(self.seconds[name])

    def speedup(self, name: str, reference: str) -> float:
        """The reference's median time over ``name``'s."""
        return self.median(reference) / self.median(name)

    def speedup_range(self, name: str, reference: str) -> Tuple[float, float]:
        """The lowest and highest speedup of one turn over the reference's
        in the same turn."""
        paired = [ref / own for ref, own in zip(self.seconds[reference],
                                                self.seconds[name])]
        return min(paired), max(paired)

    def memory_ratio(self, name: str, reference: str,
                     key: str = 'activation_mib') -> Optional[float]:
        """``name``'s peak ``key`` over the reference's; None where the
        reference's peak is 0 (a model whose activations fit in memory the
        process already holds: nothing to compare with)."""
        reference_peak = self.peaks[reference][key]
        if reference_peak == 0:
            return None
        return self.peaks[name][key] / reference_peak

    def figures(self, name: str) -> Dict:
        """``seconds_per_turn``, ``seconds_per_batch`` (the median),
        ``spread`` (None for one turn: unknown) and, where measured,
        ``activation_mib`` and ``total_mib``."""
        return dict(seconds_per_turn=self.seconds[name],
                    seconds_per_batch=self.median(name),
                    spread=self.spread(name), **self.peaks.get(name, {}))


def format_ratio(value: Optional[float]) -> str:
    """A memory ratio as a table cell: ``0.512``, or ``?`` where it is
    unknown (:meth:`SideBySide.memory_ratio`)."""
    return '?' if value is None else f'{value:.3f}'


def format_spread(value: Optional[float], turns: Optional[int] = None) -> str:
    """A spread as a table cell: ``12.3%``, or ``?`` where it is unknown
    (``value`` None, or fewer than two ``turns`` timed: one time has nothing
    to spread from)."""
    if value is None or (turns is not None and turns < 2):
        return '?'
    return f'{100 * value:.1f}%'


def side_by_side(forwards: Dict[str, Callable[[], object]], warmup: int,
                 repeats: int, device: Optional[torch.device] = None,
                 memory: Optional[MemoryProbe] = None) -> SideBySide:
    """Time ``forwards`` in ``repeats`` interleaved turns after ``warmup``
    untimed ones, then, with ``memory``, measure each one's peak on
    ``device`` (the CPU by default)."""
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    run = SideBySide(interleaved_times(forwards, warmup, repeats))
    if memory is not None:
        run.peaks = memory.peaks(forwards, device or torch.device('cpu'))
    return run
