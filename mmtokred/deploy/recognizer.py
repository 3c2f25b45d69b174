"""An exported model as an MMAction2 recognizer, so that ``tools/test.py``
evaluates the deployed file with the config's dataset, pipeline and metric
(``--backend onnxruntime|openvino --model FILE``)."""
from typing import Dict, List, Optional

import torch
from mmaction.registry import MODELS
from mmengine.model import BaseModel
from torch import Tensor

from .runtimes import RuntimeModel


@MODELS.register_module()
class ExportedRecognizer(BaseModel):
    """Predicts with a file written by ``tools/export.py``, as the
    recognizer it was exported from does: the config's data preprocessor
    makes the clips, the file gives each view's class scores, and the
    config's head averages the views (its ``average_clips``) into the
    predictions the metric reads.

    Args:
        model_file: the exported file (``.onnx``, or OpenVINO's ``.xml``).
        engine: 'onnxruntime' or 'openvino'.
        precision: the engine's inference precision ('fp32', 'bf16',
            'fp16'; see :class:`~.runtimes.RuntimeModel`).
        cls_head: the config's head; only its averaging of views runs (its
            weights are the file's).
        data_preprocessor: the config's.
    """

    def __init__(self, model_file: str, cls_head: Dict,
                 engine: str = 'onnxruntime', precision: str = 'fp32',
                 data_preprocessor: Optional[Dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor or dict(
            type='ActionDataPreprocessor'))
        self.runtime = RuntimeModel(model_file, engine, precision)
        self.cls_head = MODELS.build(cls_head)

    def forward(self, inputs: Tensor, data_samples: Optional[List] = None,
                mode: str = 'predict'):
        """``mode='predict'``: the data samples with ``pred_score`` and
        ``pred_label``; ``mode='tensor'``: each view's scores ``(N *
        views, num_classes)``. An exported file does not train."""
        if mode not in ('predict', 'tensor'):
            raise ValueError(f'ExportedRecognizer runs mode predict or '
                             f'tensor (an exported file does not train), '
                             f'got {mode!r}')
        clips = inputs.reshape((-1, ) + inputs.shape[2:])
        scores = self.runtime(clips).to(inputs.device)
        if mode == 'tensor':
            return scores
        with torch.no_grad():
            return self.cls_head.predict_by_feat(scores, data_samples)
