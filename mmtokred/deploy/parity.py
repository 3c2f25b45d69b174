"""How close an exported model's scores are to the torch model's."""
import os
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch
from torch import Tensor, nn

from ..table import Column, format_table, key
from .clip_classifier import ClipClassifier
from .runtimes import RuntimeModel

PathLike = Union[str, os.PathLike]
#: The relative change of the clips for the torch model's own sensitivity.
NUDGE = 1e-6


def runtime_file(path: PathLike, engine: str) -> Path:
    """The file ``engine`` runs of an export written to ``path``: ONNX
    Runtime reads the ``.onnx`` that an OpenVINO ``.xml`` was converted
    from, kept beside it."""
    path = Path(path)
    return path.with_suffix('.onnx') if engine == 'onnxruntime' else path


def score_difference(reference: Tensor, scores: Tensor) -> Dict[str, float]:
    """``max_abs`` difference, ``relative`` (over the largest reference
    score) and ``same_argmax`` (the share of clips whose top class agrees)
    of ``scores`` against ``reference``, both ``(N, num_classes)``."""
    reference, scores = reference.float(), scores.float()
    max_abs = float((scores - reference).abs().max())
    return dict(
        max_abs=max_abs,
        relative=max_abs / max(float(reference.abs().max()), 1e-12),
        same_argmax=float((scores.argmax(-1) == reference.argmax(-1))
                          .float().mean()),
        finite=bool(torch.isfinite(scores).all()))


def compare_outputs(model: nn.Module, path: PathLike,
                    engines: Sequence[str], clips: Tensor,
                    precision: str = 'fp32') -> List[Dict]:
    """Run the recognizer ``model`` (in torch, fp32) and the file exported
    from it at ``path`` in each of ``engines`` on ``clips`` ``(N, C, T, H,
    W)``; one :func:`score_difference` dict per engine, with ``engine``
    and the ``precision`` it computed in, after a first row of the torch
    model on the clips scaled by ``1 + NUDGE``: how much rounding alone
    moves it."""
    classifier = ClipClassifier(model).eval()
    with torch.no_grad():
        reference = classifier(clips)
        # How far the torch model itself moves when its input moves by
        # rounding: the scale against which an engine's difference reads.
        # Hard token choices (ToMe's matching on near-equal similarities)
        # can turn rounding into a different merge.
        nudged = classifier(clips * (1 + NUDGE))
    rows = [dict(engine='torch', precision=f'fp32, clips x (1 + {NUDGE:g})',
                 **score_difference(reference, nudged))]
    for engine in engines:
        runtime = RuntimeModel(runtime_file(path, engine), engine, precision)
        rows.append(dict(engine=engine, precision=runtime.precision,
                         **score_difference(reference, runtime(clips))))
    return rows


#: The columns of :func:`format_parity`, one row per engine.
COLUMNS = (
    Column('engine', lambda row: row['engine'], 'left'),
    Column('computed in', lambda row: row['precision'], 'left'),
    Column('max |diff|', key('max_abs', '.2e')),
    Column('relative', key('relative', '.2e')),
    Column('same top class', lambda row:
           f"{100 * row['same_argmax']:.0f}% of clips"),
    Column('finite', lambda row: 'yes' if row['finite'] else 'NO'),
)


def format_parity(rows: Sequence[Dict]) -> str:
    """The rows of :func:`compare_outputs` as a table."""
    return format_table(COLUMNS, rows, title='scores against the torch '
                        'model in fp32 on the same clips')
