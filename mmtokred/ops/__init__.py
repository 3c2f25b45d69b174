"""Pure-torch token operations: no OpenMMLab imports in this package."""
from .token_state import TokenState

__all__ = ['TokenState']
