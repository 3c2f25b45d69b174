"""Workarounds that keep the reducers' stable sorts stable through export.

The reducers sort stably (``argsort(..., stable=True)``): ties are common
(flat regions give NEPAM windows of equal score) and their order decides
what merges, as in NEPAM's official code; the pinned outputs depend on it.
ONNX has one sorting operator, ``TopK``, whose definition breaks ties by
index ("the element with the lower index will appear first"): a stable
sort, ascending or descending, when ``k`` is the whole axis. Two upstream
gaps stand between that and the runtimes:

1. torch.onnx's function library (onnxscript's torch_lib) registers
   ``aten::sort`` but not its overload ``aten::sort.stable``, which
   ``argsort(..., stable=True)`` lowers to: the export stops at "No ONNX
   function found for aten.sort.stable"
   (https://github.com/microsoft/onnxscript/pull/3053, open).
   :func:`sort_translations` gives the overload the same function (TopK).
2. OpenVINO's ONNX frontend (2026.4) builds ONNX ``TopK`` as its TopK-11
   with ``stable=false``, so equal values come out in any order, against
   ONNX's definition (OpenVINO made other ONNX operators' TopK stable in
   https://github.com/openvinotoolkit/openvino/pull/33199, not this one).
   :func:`make_topk_stable` sets ``stable`` on every TopK of a model read
   from ONNX; a test checks ties in both runtimes.
"""
from typing import Dict


def sort_translations() -> Dict:
    """The ``custom_translation_table`` of ``torch.onnx.export`` that
    exports ``aten.sort.stable`` (1.)."""
    import torch
    from onnxscript.function_libs.torch_lib.ops.core import aten_sort
    return {torch.ops.aten.sort.stable: aten_sort}


def make_topk_stable(ov_model) -> int:
    """Set ``stable`` on every TopK of an OpenVINO model read from ONNX (2.);
    returns how many it set."""
    changed = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == 'TopK' and \
                'stable' in op.get_attributes() and \
                op.get_attributes()['sort'] in ('value', 'index'):
            op.set_attribute('stable', True)
            changed += 1
    return changed
