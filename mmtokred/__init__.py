"""mmtokred: training-free token reduction for MMAction2's VideoMAE.

Importing the package does nothing beyond this file, so ``mmtokred.ops`` stays
pure torch. The MMAction2 entry point is :mod:`mmtokred.plugin` (configs name
it in ``custom_imports``): it applies the upstream workarounds and registers
the backbone and reducers.
"""
__version__ = '0.1.0'
__all__ = ['__version__']
