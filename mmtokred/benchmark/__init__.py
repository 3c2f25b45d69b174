"""Measurement: speed, FLOPs, memory and what a forward pass did, side by
side with stock MMAction2 or timm. Import the submodules (``compare``,
``flops``, ``memory``, ``observe``, ...); this package imports none of them,
so measuring a timm model never loads MMAction2."""
