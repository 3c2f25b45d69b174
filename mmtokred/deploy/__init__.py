"""Deployment: a config's recognizer exported to ONNX and OpenVINO, run in
ONNX Runtime or OpenVINO, and put back under MMAction2's test loop.

- :mod:`.clip_classifier`: what is exported (clips to class scores) and
  which token reductions can be (fixed budgets only).
- :mod:`.onnx_export`: the export (``torch.onnx.export(dynamo=True)``) and
  the conversion to OpenVINO's IR.
- :mod:`.runtimes`: an exported file run in ONNX Runtime or OpenVINO.
- :mod:`.recognizer`: ``ExportedRecognizer``, an exported file as an
  MMAction2 model, for ``tools/test.py --backend``.

``onnx``, ``onnxscript``, ``onnxruntime`` and ``openvino`` are the extra
``deploy`` (``pip install -e ".[deploy]"``); they are imported where used.
"""
from .clip_classifier import ClipClassifier, check_exportable
from .runtimes import ENGINES, PRECISIONS, RuntimeModel

__all__ = ['ClipClassifier', 'ENGINES', 'PRECISIONS', 'RuntimeModel',
           'check_exportable']
