"""Measuring a forward pass, apart from any experiment: timing
(:mod:`.forward`), FLOPs (:mod:`.flops`), memory (:mod:`.memory`), the
machine and its limits (:mod:`.cpu`, :mod:`.peak`, :mod:`.kernels`),
observation hooks (:mod:`.observe`) and the side-by-side routine of every
benchmark (:mod:`.side_by_side`); and of the inputs, how redundant clips
are for NEPAM (:mod:`.redundancy`). The model computes; these observe it
from outside. Import the submodules; this package imports none of them."""
