"""mmtokred for timm's image ViTs: with the image benchmarks
(:mod:`mmtokred.benchmark.image`, :mod:`mmtokred.benchmark.image_accuracy`),
the only code of mmtokred that imports timm (and so torchvision).

- :mod:`.patch`: :func:`apply_token_reduction` patches a timm ViT/DeiT in
  place (pure torch + timm, no OpenMMLab); imported here.
- :mod:`.backbone`: ``TimmTokenReductionViT``, an MMAction2 frame backbone
  (registered by :mod:`mmtokred.plugin` where timm imports; elsewhere, a
  placeholder of that name whose build says how to install timm).
- :mod:`.checkpoint`: loads a training script's weights into a timm model.

Their speed, FLOPs, memory and top-1 against timm's own are measured by
:mod:`mmtokred.benchmark.image` and :mod:`mmtokred.benchmark.image_accuracy`
(``tools/benchmark_timm.py``, ``tools/eval_timm.py``).
"""
from .patch import (OFFICIAL_PPT, PAPER_SETTINGS, TokenReductionMixin,
                    apply_token_reduction)

__all__ = ['apply_token_reduction', 'OFFICIAL_PPT', 'PAPER_SETTINGS',
           'TokenReductionMixin']
