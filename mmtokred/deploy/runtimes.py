"""An exported clip classifier run in ONNX Runtime or OpenVINO on the CPU.

Both run with as many threads as torch uses here (``torch.get_num_threads``),
so that engines compared side by side get the same cores.
"""
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .onnx_export import (METADATA_PREFIX, read_metadata,
                          read_openvino_metadata)
from .stable_sort import make_topk_stable

#: The runtimes an exported file runs in.
ENGINES = ('onnxruntime', 'openvino')
#: Inference precisions, named as ``tools/benchmark.py --dtype`` names them.
PRECISIONS = ('fp32', 'bf16', 'fp16')
#: OpenVINO's names of them (its ``INFERENCE_PRECISION_HINT``).
_OPENVINO_PRECISION = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16'}
#: What OpenVINO's CPU plugin lists in ``OPTIMIZATION_CAPABILITIES`` where
#: it can compute in that precision.
_OPENVINO_CAPABILITY = {'bf16': 'BF16', 'fp16': 'FP16'}


def _check(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {tuple(allowed)}, got '
                         f'{value!r}')


def _missing(engine: str, error: ImportError) -> ImportError:
    return ImportError(
        f'the {engine} engine needs the deploy extra, which does not import '
        f'here ({error}): pip install -e ".[deploy]"')


class RuntimeModel:
    """An exported file (``.onnx``, or OpenVINO's ``.xml``) compiled for the
    CPU by one engine; called with clips ``(N, C, T, H, W)`` (a tensor or
    an array) it returns the scores ``(N, num_classes)`` as a float32
    tensor.

    Args:
        path: the file: ONNX for either engine, OpenVINO's IR for openvino.
        engine: one of :data:`ENGINES`.
        precision: one of :data:`PRECISIONS`, the precision the engine
            computes in. ONNX Runtime's CPU provider runs the fp32 graph in
            fp32 only; OpenVINO takes each as its inference precision
            where the CPU can compute in it (bf16: AVX512-BF16 or AMX).
        threads: threads the engine uses (default: torch's).

    Attributes:
        precision: what the engine computes in, as the compiled model
            reports it.
        clip_shape: ``(C, T, H, W)`` of the clips the file takes.
        metadata: what ``tools/export.py`` recorded in the file (config,
            checkpoint, token reduction, clip shape); empty for files
            written otherwise.
    """

    def __init__(self, path: Union[str, os.PathLike], engine: str,
                 precision: str = 'fp32',
                 threads: Optional[int] = None) -> None:
        _check('engine', engine, ENGINES)
        _check('precision', precision, PRECISIONS)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'no exported model at {self.path}: '
                                    'write one with tools/export.py')
        self.engine = engine
        threads = threads or torch.get_num_threads()
        if engine == 'onnxruntime':
            self._run = self._onnxruntime(precision, threads)
        else:
            self._run = self._openvino(precision, threads)

    def _onnxruntime(self, precision: str, threads: int):
        if self.path.suffix != '.onnx':
            raise ValueError(f'onnxruntime runs .onnx files, got {self.path}'
                             ' (an OpenVINO .xml runs in openvino)')
        if precision != 'fp32':
            raise ValueError(
                f"precision {precision!r}: ONNX Runtime's CPU provider runs "
                'the exported fp32 graph in fp32; use the openvino engine '
                'for bf16 or fp16 inference precision')
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise _missing('onnxruntime', error) from error
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(self.path), options,
                                       providers=['CPUExecutionProvider'])
        self.precision = 'fp32'
        self.metadata = {
            key[len(METADATA_PREFIX):]: value for key, value in
            session.get_modelmeta().custom_metadata_map.items()
            if key.startswith(METADATA_PREFIX)}
        clips_input = session.get_inputs()[0]
        self.clip_shape = tuple(clips_input.shape[1:])
        return lambda clips: session.run(None, {clips_input.name: clips})[0]

    def _openvino(self, precision: str, threads: int):
        try:
            import openvino as ov
        except ImportError as error:
            raise _missing('openvino', error) from error
        if self.path.suffix not in ('.onnx', '.xml'):
            raise ValueError('openvino runs .onnx files or its own .xml, '
                             f'got {self.path}')
        core = ov.Core()
        capability = _OPENVINO_CAPABILITY.get(precision)
        if capability and capability not in core.get_property(
                'CPU', 'OPTIMIZATION_CAPABILITIES'):
            raise ValueError(
                f'precision {precision!r}: OpenVINO cannot compute in it on '
                f'this CPU ({core.get_property("CPU", "FULL_DEVICE_NAME")}: '
                f'no {capability} in its optimization capabilities); use '
                'fp32')
        model = core.read_model(str(self.path))
        if self.path.suffix == '.xml':
            self.metadata = read_openvino_metadata(model)
        else:  # read from ONNX here, as onnx_to_openvino does
            import onnx
            make_topk_stable(model)
            self.metadata = read_metadata(onnx.load(
                str(self.path), load_external_data=False))
        dims = model.inputs[0].get_partial_shape()
        self.clip_shape = tuple(dim.get_length() for dim in dims[1:])
        compiled = core.compile_model(model, 'CPU', {
            'INFERENCE_PRECISION_HINT': _OPENVINO_PRECISION[precision],
            'INFERENCE_NUM_THREADS': threads,
            'PERFORMANCE_HINT': 'LATENCY',
        })
        reported = compiled.get_property(
            'INFERENCE_PRECISION_HINT').to_string()  # 'f32', 'bf16', 'f16'
        self.precision = {value: name for name, value in
                          _OPENVINO_PRECISION.items()}.get(reported, reported)
        request = compiled.create_infer_request()

        def run(clips: np.ndarray) -> np.ndarray:
            return request.infer({0: clips})[0]
        return run

    def __call__(self, clips: Union[torch.Tensor, np.ndarray]
                 ) -> torch.Tensor:
        if isinstance(clips, torch.Tensor):
            clips = clips.detach().cpu().float().numpy()
        if clips.ndim != 1 + len(self.clip_shape) or \
                tuple(clips.shape[1:]) != self.clip_shape:
            raise ValueError(
                f'clips of shape {tuple(clips.shape)}: {self.path} takes '
                f'(N, {", ".join(map(str, self.clip_shape))}), the shape it '
                'was exported for (tools/export.py --shape T H W exports '
                'another)')
        scores = self._run(np.ascontiguousarray(clips, dtype=np.float32))
        return torch.from_numpy(np.array(scores, dtype=np.float32))

    def describe(self) -> str:
        """One line: the file, the engine and its precision, and what the
        file was exported from."""
        line = f'{self.path} in {self.engine} ({self.precision})'
        if self.metadata.get('config'):
            line += (f", exported from {self.metadata['config']} with "
                     f"{self.metadata.get('checkpoint', '?')}")
        return line
