"""MMAction2 entry point: ``custom_imports=dict(imports=["mmtokred.plugin"])``.

Importing it applies every workaround of :mod:`mmtokred.upstream_fixes` whose
upstream bug is present (the one place that lists them) and registers the
backbones of :mod:`mmtokred.models` (their reducers are built from
:data:`mmtokred.reducers.REDUCERS`, the one registry), the checked dataset and
hook of :mod:`mmtokred.data.checks`, the ``ExportedRecognizer`` of
:mod:`mmtokred.deploy.recognizer` and the ``AttentionKernelHook`` of
:mod:`mmtokred.attention_kernel_hook`, in mmaction's registries; with timm
installed, also the frame backbone of :mod:`mmtokred.timm.backbone`
(without timm, a placeholder of that name that says how to install it).
"""
from . import upstream_fixes

upstream_fixes.apply()

from mmaction.registry import MODELS  # noqa: E402
from .models import TokenReductionVisionTransformer  # noqa: E402
from .data import checks  # noqa: E402,F401  (registers the data checks)
from .deploy import recognizer  # noqa: E402,F401  (ExportedRecognizer)
from . import attention_kernel_hook  # noqa: E402,F401  (its hook)


def _register_timm_placeholder(missing: ImportError) -> None:
    """Register ``TimmTokenReductionViT`` as a builder that raises
    ImportError naming the extra to install: without it, building a
    tsn_timm config fails with the registry's bare KeyError."""
    message = (
        f'TimmTokenReductionViT needs timm and torchvision, which do not '
        f'import here ({missing}): install the timm extra, pip install -e '
        '".[timm]", with a torch build that has torchvision (the CPU-only '
        'torch wheel has none; README, Tests, and docs/timm.md)')

    @MODELS.register_module(name='TimmTokenReductionViT')
    def timm_token_reduction_vit(**kwargs) -> None:
        raise ImportError(message)


try:  # TimmTokenReductionViT (frame backbone), where timm is installed
    from .timm import backbone  # noqa: E402,F401
except ImportError as exc:  # only a missing timm/torchvision is tolerated
    if (exc.name or '').partition('.')[0] not in ('timm', 'torchvision'):
        raise
    _register_timm_placeholder(exc)

__all__ = ['TokenReductionVisionTransformer']
