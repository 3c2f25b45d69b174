"""mmtokred: training-free token reduction for MMAction2's VideoMAE.

Importing the package makes MMAction2 1.2.0 importable despite its packaging
bugs (:mod:`mmtokred.upstream_fixes`) and registers the backbone and reducers
in mmaction's registries.
"""
from . import upstream_fixes

upstream_fixes.apply()

from .models import TokenReductionVisionTransformer  # noqa: E402

__version__ = '0.1.0'
__all__ = ['TokenReductionVisionTransformer', '__version__']
