"""A config's recognizer, with its checkpoint, exported to a file that
ONNX Runtime or OpenVINO runs: what ``tools/export.py`` does."""
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from torch import nn

from .. import checkpoint_fit
from .clip_classifier import ClipClassifier, check_exportable
from .onnx_export import export_onnx, onnx_to_openvino

#: The file formats written, by the suffix their file takes.
FORMATS = {'onnx': '.onnx', 'openvino': '.xml'}


def clip_shape(cfg: Config,
               shape: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """``(C, T, H, W)`` of the clips the config's backbone takes: its
    ``in_channels``, ``num_frames`` and ``img_size``, or ``shape`` ``(T, H,
    W)`` where given."""
    from ..benchmark.video import built_clip_shape, check_clip_shape
    backbone = cfg.model.backbone
    built = built_clip_shape(backbone)
    if shape is None:
        shape = (built['num_frames'], built['img_size'], built['img_size'])
    else:
        check_clip_shape(backbone, shape, 'the config', '--shape')
    return (backbone.get('in_channels', 3), *shape)


def build_recognizer(cfg: Config,
                     checkpoint: Optional[str] = None) -> nn.Module:
    """``cfg.model`` in eval mode with ``checkpoint``, which must fill every
    tensor of the model (:mod:`mmtokred.checkpoint_fit`: a checkpoint of
    another model is refused); None keeps the constructors' seeded random
    weights."""
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    if checkpoint:
        checkpoint_fit.load_checkpoint(model, checkpoint)
    return model


def export_recognizer(model: nn.Module, fmt: str,
                      out: Union[str, os.PathLike],
                      shape: Sequence[int], config: str = 'the config',
                      metadata: Optional[Dict[str, str]] = None
                      ) -> Dict[str, object]:
    """Export ``model``'s backbone and head (clips of ``shape`` ``(C, T, H,
    W)``, any batch) as ``fmt`` ('onnx' or 'openvino') to ``out``, with
    ``metadata`` (what it was exported from) recorded in the file.

    Returns ``dict(path, onnx)``: the file written and the ONNX file it
    came from (the same for 'onnx'; for 'openvino' kept beside the IR).
    """
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {tuple(FORMATS)}, got '
                         f'{fmt!r}')
    out = Path(out)
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f'--out {out}: a {fmt} model is written to a '
                         f'{FORMATS[fmt]} file')
    check_exportable(model.backbone, config)
    classifier = ClipClassifier(model)
    onnx_path = out if fmt == 'onnx' else out.with_suffix('.onnx')
    export_onnx(classifier, onnx_path, shape,
                metadata=dict(metadata or {}, clip_shape=tuple(shape)))
    if fmt == 'openvino':
        onnx_to_openvino(onnx_path, out)
    return dict(path=out, onnx=onnx_path)
