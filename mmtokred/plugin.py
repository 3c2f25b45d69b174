"""MMAction2 entry point: ``custom_imports=dict(imports=["mmtokred.plugin"])``.

Importing it applies every workaround of :mod:`mmtokred.upstream_fixes` whose
upstream bug is present (the one place that lists them) and registers the
backbone and reducers of :mod:`mmtokred.models`, and the checked dataset and
hook of :mod:`mmtokred.data.checks`, in mmaction's registries; with timm
installed, also the frame backbone of :mod:`mmtokred.timm.backbone`.
"""
from . import upstream_fixes

upstream_fixes.apply()

from .models import TokenReductionVisionTransformer  # noqa: E402
from .data import checks  # noqa: E402,F401  (registers the data checks)

try:  # TimmTokenReductionViT (frame backbone), where timm is installed
    from .timm import backbone  # noqa: E402,F401
except ImportError as exc:  # only a missing timm/torchvision is tolerated
    if (exc.name or '').partition('.')[0] not in ('timm', 'torchvision'):
        raise

__all__ = ['TokenReductionVisionTransformer']
