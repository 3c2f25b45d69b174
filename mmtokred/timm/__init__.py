"""mmtokred for timm's image ViTs: the only package of mmtokred that imports
timm (and so torchvision).

- :mod:`.patch`: :func:`apply_token_reduction` patches a timm ViT/DeiT in
  place (pure torch + timm, no OpenMMLab); imported here.
- :mod:`.backbone`: ``TimmTokenReductionViT``, an MMAction2 frame backbone
  (registered by :mod:`mmtokred.plugin` where timm imports; elsewhere, a
  placeholder of that name whose build says how to install timm).
- :mod:`.compare`: timm stock against reduced, speed, FLOPs, memory and
  top-1 (``tools/benchmark_timm.py``, ``tools/eval_timm.py``).
"""
from .patch import (OFFICIAL_PPT, PAPER_SETTINGS, TokenReductionMixin,
                    apply_token_reduction)

__all__ = ['apply_token_reduction', 'OFFICIAL_PPT', 'PAPER_SETTINGS',
           'TokenReductionMixin']
