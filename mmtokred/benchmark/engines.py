"""Configs' models in each inference engine and precision, side by side:
torch (eager), and the same model exported to ONNX and run in ONNX Runtime
or OpenVINO, against the fastest dense engine of each precision.

A user who deploys VideoMAE on CPUs compares a reduced model with the
fastest way to run the plain one, which may be another runtime: every
model here (stock MMAction2, dense, each config) runs in every engine and
precision that can run it, all taking turns in every repetition.
"""
import copy
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config

from ..deploy.clip_classifier import ClipClassifier, export_refusal
from ..deploy.onnx_export import export_onnx
from ..deploy.parity import score_difference
from ..deploy.runtimes import ENGINES as RUNTIMES
from ..deploy.runtimes import RuntimeModel
from ..measure.flops import count_gflops
from ..measure.forward import DTYPES, device_name, forward_fn, prepare
from ..measure.observe import TokenRecorder
from ..measure.side_by_side import format_spread, side_by_side
from ..ops.linear import cpu_linear, cpu_linear_reason
from ..table import Column, format_table
from .cells import format_tokens, speedup
from .driver import check_counts
from .variants import build_variants
from .video import check_clip_shape, config_names, default_clip_shape

#: The engines: torch eager, then the runtimes of :mod:`mmtokred.deploy`.
ENGINES = ('torch', *RUNTIMES)


def _check(engines: Sequence[str], dtypes: Sequence[str]) -> None:
    for name, values, allowed in (('engines', engines, ENGINES),
                                  ('dtypes', dtypes, tuple(DTYPES))):
        if not values or any(value not in allowed for value in values):
            raise ValueError(f'{name} must be one or more of {allowed}, got '
                             f'{list(values)}')
        if len(set(values)) != len(values):
            raise ValueError(f'{name} lists one twice: {list(values)}')


def _torch_forward(model: torch.nn.Module, clips: torch.Tensor,
                   dtype: str) -> Callable[[], torch.Tensor]:
    """The torch model (a copy, cast to ``dtype``) on ``clips``."""
    model = prepare(copy.deepcopy(model), dtype)
    return forward_fn(model, clips[:, None], amp=False)


def compare_engines(configs: Union[str, Sequence[str]], *,
                    engines: Sequence[str] = ENGINES,
                    dtypes: Sequence[str] = ('fp32', ),
                    cfg_options: Optional[Dict] = None,
                    batch_size: int = 1,
                    input_shape: Optional[Sequence[int]] = None,
                    warmup: int = 1,
                    repeats: int = 3,
                    progress: Optional[Callable[[str], None]] = None
                    ) -> Dict:
    """Time stock, dense and each config's model in each engine and dtype
    on the CPU, with one set of random weights, all taking turns.

    A runtime runs the model exported to ONNX (fp32 weights) with the
    dtype as its inference precision; what cannot run (ONNX Runtime in
    bf16 or fp16, OpenVINO in a precision the CPU lacks, a clip-dependent
    token budget in any runtime) is listed under ``skipped`` with why.

    Returns:
        ``rows``: one dict per (model, engine, dtype) that ran, with
        ``seconds_per_batch``, ``spread``, ``gflops_per_clip``,
        ``tokens_per_block``, ``speedup_vs_fastest_dense`` (against the
        fastest dense engine of the same dtype), ``speedup_vs_stock_torch``
        (against stock MMAction2 in torch fp32 where it ran) and
        ``vs_torch`` (its scores against the torch fp32 model's:
        :func:`~mmtokred.deploy.parity.score_difference`); ``skipped``;
        the run's settings.
    """
    _check(engines, dtypes)
    check_counts(batch_size, warmup, repeats)
    say = progress or (lambda line: None)
    paths = config_names(configs)
    cfgs = {}
    for name, path in paths.items():
        cfgs[name] = Config.fromfile(path)
        cfgs[name].merge_from_dict(cfg_options or {})
    backbone = next(iter(cfgs.values())).model.backbone
    if input_shape is None:
        input_shape = default_clip_shape(backbone)
    else:
        check_clip_shape(backbone, input_shape, next(iter(paths.values())))
    clip_shape = (backbone.get('in_channels', 3), *input_shape)
    clips = torch.randn(batch_size, *clip_shape,
                        generator=torch.Generator().manual_seed(0))
    models = build_variants(cfgs, None)

    figures, reference = {}, {}
    for name, model in models.items():
        one_clip = forward_fn(model, clips[:1, None], amp=False)
        figures[name] = dict(gflops_per_clip=count_gflops(one_clip),
                             tokens_per_block=None)
        if name != 'stock':  # stock's blocks take no token state
            with TokenRecorder(model.backbone) as recorder:
                one_clip()
            figures[name]['tokens_per_block'] = recorder.tokens_per_block
        with torch.no_grad():
            reference[name] = ClipClassifier(model)(clips)

    forwards: Dict[Tuple[str, str, str], Callable] = {}
    precision: Dict[Tuple[str, str, str], str] = {}
    skipped: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix='mmtokred_engines_') as folder:
        for name, model in models.items():
            exported = None
            for engine in engines:
                for dtype in dtypes:
                    key = (name, engine, dtype)
                    if engine == 'torch':
                        forwards[key] = _torch_forward(model, clips, dtype)
                        precision[key] = dtype
                        continue
                    reason = export_refusal(model.backbone)
                    if reason is not None:
                        skipped.append(dict(model=name, engine=engine,
                                            dtype=dtype, why=reason))
                        continue
                    if exported is None:
                        say(f'exporting {name} to ONNX...')
                        exported = export_onnx(ClipClassifier(model),
                                               Path(folder) / f'{name}.onnx',
                                               clip_shape)
                    try:
                        runtime = RuntimeModel(exported, engine, dtype)
                    except ValueError as error:
                        skipped.append(dict(model=name, engine=engine,
                                            dtype=dtype, why=str(error)))
                        continue
                    forwards[key] = _runtime_forward(runtime, clips)
                    precision[key] = runtime.precision
        say(f'timing {len(forwards)} engine runs side by side, '
            f'{repeats} turns...')
        outputs = {key: forward() for key, forward in forwards.items()}
        run = side_by_side(
            {'|'.join(key): forward for key, forward in forwards.items()},
            warmup, repeats)

    rows = []
    for key in forwards:
        name, engine, dtype = key
        row = dict(model=name, engine=engine, dtype=dtype,
                   precision=precision[key], **figures[name],
                   **run.figures('|'.join(key)),
                   vs_torch=score_difference(reference[name],
                                             outputs[key].float().cpu()))
        row.pop('seconds_per_turn')
        row['clips_per_s'] = batch_size / row['seconds_per_batch']
        rows.append(row)
    _ratios(rows)
    return dict(configs=list(paths.values()), device=device_name(
        torch.device('cpu')), input_shape=list(clips.shape), warmup=warmup,
        repeats=repeats, engines=list(engines), dtypes=list(dtypes),
        rows=rows, skipped=skipped, versions=_versions(engines),
        linear=dict(path=cpu_linear(), reason=cpu_linear_reason()))


def _versions(engines: Sequence[str]) -> Dict[str, str]:
    """The version of each engine that ran."""
    versions = {'torch': torch.__version__}
    for engine in engines:
        if engine != 'torch':
            versions[engine] = __import__(engine).__version__
    return versions


def _runtime_forward(runtime: RuntimeModel,
                     clips: torch.Tensor) -> Callable[[], torch.Tensor]:
    array = clips.numpy()
    return lambda: runtime(array)


def _ratios(rows: List[Dict]) -> None:
    """Each row's speedup against the fastest dense row of its dtype and
    against stock in torch fp32."""
    fastest = {}
    for row in rows:
        if row['model'] == 'dense' or (row['model'] == 'stock' and not any(
                other['model'] == 'dense' for other in rows)):
            best = fastest.get(row['dtype'])
            if best is None or row['seconds_per_batch'] < \
                    best['seconds_per_batch']:
                fastest[row['dtype']] = row
    stock = next((row for row in rows if row['model'] == 'stock'
                  and row['engine'] == 'torch' and row['dtype'] == 'fp32'),
                 None)
    for row in rows:
        best = fastest.get(row['dtype'])
        row['fastest_dense'] = best and f"{best['engine']}"
        row['speedup_vs_fastest_dense'] = best and (
            best['seconds_per_batch'] / row['seconds_per_batch'])
        row['speedup_vs_stock_torch'] = stock and (
            stock['seconds_per_batch'] / row['seconds_per_batch'])


#: The columns of :func:`format_engines`, one row per model, engine and
#: dtype.
COLUMNS = (
    Column('model', lambda row: row['model'], 'left', width=6),
    Column('engine', lambda row: row['engine'], width=11),
    Column('dtype', lambda row: row['precision'], width=5),
    Column('s/clip', lambda row:
           f"{row['seconds_per_batch'] / row['batch']:.3f}", width=7),
    Column('spread', lambda row: format_spread(row['spread'], row['turns']),
           width=6),
    Column('GMACs', lambda row: f"{row['gflops_per_clip']:.2f}", width=7),
    Column('vs fastest dense', speedup('speedup_vs_fastest_dense')),
    Column('vs stock torch fp32', speedup('speedup_vs_stock_torch')),
    Column('max |diff| vs torch fp32', lambda row:
           f"{row['vs_torch']['max_abs']:.1e}"
           + ('' if row['vs_torch']['finite'] else ' NaN')),
    Column('tokens', lambda row: format_tokens(row['tokens_per_block']),
           'left'),
)


def format_engines(result: Dict) -> str:
    """The rows of :func:`compare_engines` as one table, each dtype's
    fastest dense engine named below it."""
    batch = result['input_shape'][0]
    rows = [dict(row, batch=batch, turns=result['repeats'])
            for row in result['rows']]
    title = (f"{', '.join(result['configs'])} on {result['device']}, input "
             f"{tuple(result['input_shape'])}, engines " + ', '.join(
                 f'{engine} {result["versions"][engine]}'
                 for engine in result['engines'])
             + f", dtypes {', '.join(result['dtypes'])}")
    notes = []
    for dtype in result['dtypes']:
        dense = [row for row in rows if row['dtype'] == dtype
                 and row['model'] == 'dense']
        if dense:
            best = min(dense, key=lambda row: row['seconds_per_batch'])
            notes.append(f"fastest dense in {dtype}: {best['engine']} "
                         f"({best['seconds_per_batch'] / batch:.3f} s/clip)")
    notes.append(f"torch's fp32 matrix products: {result['linear']['reason']}")
    for skip in result['skipped']:
        notes.append(f"not run: {skip['model']} in {skip['engine']} "
                     f"{skip['dtype']}: {skip['why']}")
    notes.append('dtype: what the engine computed in (OpenVINO reports its '
                 'inference precision); vs fastest dense: speedup over the '
                 'fastest engine running the dense model in the same dtype; '
                 'max |diff|: scores against the same model in torch fp32; '
                 "spread: (max - min) / median of the turns' times"
                 + (' (?: one turn, unknown)' if result['repeats'] < 2
                    else ''))
    return format_table(COLUMNS, rows, title=title, notes=notes)
