"""A :class:`~.clip_classifier.ClipClassifier` exported to ONNX, and the
ONNX file converted to OpenVINO's IR.

The export is ``torch.onnx.export(dynamo=True)``: ``torch.export`` traces
the forward pass with the token counts its plan fixes at build time, and
the batch stays dynamic. The legacy TorchScript exporter is not used: it
traces ``round()`` of the budget on a traced shape (``type Tensor doesn't
define __round__``) and gives ToMe a graph ONNX Runtime refuses.
"""
import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from .stable_sort import make_topk_stable, sort_translations

#: The ONNX opset written.
OPSET = 18

PathLike = Union[str, os.PathLike]
#: The prefix of the metadata keys written into exported files.
METADATA_PREFIX = 'mmtokred.'


@contextlib.contextmanager
def _quiet_exporter():
    """Leave out what torch 2.13's exporter says on every export that is
    not about the model: a warning per torchvision operator it cannot
    register where torchvision is not installed, and pytree's deprecation
    of ``LeafSpec``, which the exporter itself uses."""
    registration = logging.getLogger(
        'torch.onnx._internal.exporter._registration')
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*LeafSpec',
                                    category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(model: nn.Module, path: PathLike,
                clip_shape: Sequence[int], batch_size: int = 2,
                metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``model`` (clips ``(N, *clip_shape)`` to scores) to the ONNX
    file ``path``, the batch ``N`` dynamic; returns the path.

    ``batch_size`` is that of the example clips traced (2: a batch of one
    would let the tracer specialise N to 1). ``metadata`` (e.g. the config
    and its token reduction) is kept in the file's ``metadata_props``,
    each key prefixed with :data:`METADATA_PREFIX`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(batch_size, *clip_shape,
                          generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim('batch', min=1)
    # The exporter prints its steps: kept for when it fails.
    steps = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(steps), \
                _quiet_exporter():
            program = torch.onnx.export(
                model.eval(), (example, ), dynamo=True, opset_version=OPSET,
                input_names=['clips'], output_names=['scores'],
                dynamic_shapes=({0: batch}, ),
                custom_translation_table=sort_translations(), verbose=False)
    except Exception:
        print(steps.getvalue(), end='')
        raise
    for key, value in (metadata or {}).items():
        program.model.metadata_props[METADATA_PREFIX + key] = str(value)
    # Weights inside the file (a ViT-B is 0.35 GB, under protobuf's 2 GB).
    program.save(str(path), external_data=False)
    return path


def read_metadata(model_proto) -> Dict[str, str]:
    """The metadata :func:`export_onnx` wrote, from a loaded ONNX model
    (``onnx.load(path, load_external_data=False)``), prefix removed."""
    return {prop.key[len(METADATA_PREFIX):]: prop.value
            for prop in model_proto.metadata_props
            if prop.key.startswith(METADATA_PREFIX)}


def onnx_to_openvino(onnx_path: PathLike, xml_path: PathLike) -> Path:
    """Convert the ONNX file to OpenVINO's IR (``xml_path`` and the
    ``.bin`` beside it), weights kept in fp32 (OpenVINO chooses the
    inference precision when it compiles); returns ``xml_path``."""
    import openvino as ov
    xml_path = Path(xml_path)
    if xml_path.suffix != '.xml':
        raise ValueError(f'an OpenVINO model is a .xml file (its weights in '
                         f'the .bin beside it), got {xml_path}')
    import onnx
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    converted = ov.convert_model(str(onnx_path))
    make_topk_stable(converted)
    metadata = read_metadata(onnx.load(str(onnx_path),
                                       load_external_data=False))
    for key, value in metadata.items():  # the same keys, in the IR's rt_info
        converted.set_rt_info(value, [METADATA_PREFIX.rstrip('.'), key])
    ov.save_model(converted, str(xml_path), compress_to_fp16=False)
    return xml_path


def read_openvino_metadata(ov_model) -> Dict[str, str]:
    """The metadata :func:`onnx_to_openvino` kept in an OpenVINO model's
    rt_info."""
    section = METADATA_PREFIX.rstrip('.')
    if not ov_model.has_rt_info([section]):
        return {}
    info = ov_model.get_rt_info([section]).astype(dict)
    return {key: value.astype(str) for key, value in info.items()}
