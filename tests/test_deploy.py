"""Export to ONNX and OpenVINO (mmtokred.deploy, tools/export.py): every
fixed budget runs in both runtimes with the torch model's outputs; budgets
that depend on the clip are refused; the exported file in MMAction2's test
loop predicts as the torch model does."""
import json
import pickle
import sys

import numpy as np
import onnxruntime  # noqa: F401  (the deploy extra: README, Tests)
import openvino
import pytest
import torch
from conftest import (FIXED_BUDGETS, SMALL_BACKBONE, THRESHOLD, TINY_CONFIG,
                      data_options, run_tool, test_metrics)
from mmaction.registry import MODELS
from torch import nn

from mmtokred.deploy import ClipClassifier, RuntimeModel, check_exportable
from mmtokred.deploy.onnx_export import export_onnx, onnx_to_openvino
from mmtokred.deploy.parity import compare_outputs, score_difference
from mmtokred.deploy.stable_sort import make_topk_stable

#: The settings the configs use beside the fixed budgets of the backbone
#: tests: proportional attention on each kind of block reducer, and PPT
#: pooling every clip, pruning every clip, and deciding per clip.
DEPLOYED = {
    'dense': None,
    **{name: setting for name, setting in FIXED_BUDGETS.items()
       if name != 'token_pruning_random'},  # refused: see below
    'tome_proportional': dict(blocks=dict(type='ToMe', r=6),
                              proportional_attention=True),
    'tome_schedule': dict(blocks=dict(type='ToMe', r=[8, 6, 4, 2])),
    'ppt_pools': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(10, 8),
                                  threshold=float('inf')),
                      proportional_attention=True),
    'ppt_prunes': dict(blocks=dict(type='PPT', blocks=(1, 2), r=(10, 8),
                                   threshold=0.)),
    'jmp_proportional': dict(blocks=dict(type='JMP', blocks=(1, 2),
                                         r=(10, 8)),
                             proportional_attention=True),
    'nepam_window_proportional': dict(
        input=dict(type='NEPAM', window=(1, 2, 2), ratio=0.36),
        proportional_attention=True),
}
CLIP = (3, 8, 64, 64)


def small_recognizer(token_reduction) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='Recognizer3D',
        backbone=dict(SMALL_BACKBONE, token_reduction=token_reduction),
        cls_head=dict(type='TimeSformerHead', num_classes=5,
                      in_channels=SMALL_BACKBONE['embed_dims']))).eval()


def clips_with_ties(batch: int) -> torch.Tensor:
    """Random clips whose left halves are flat: many windows and tokens
    score alike, so the order of ties decides what merges."""
    clips = torch.randn(batch, *CLIP, generator=torch.Generator()
                        .manual_seed(3))
    clips[:, :, :, :, :32] = 0.5
    return clips


#: The settings run in the main tier; the others in the slow tier (each
#: export takes 7-30 s on 2 cores).
MAIN_TIER = ('dense', 'nepam_tome_proportional', 'ppt_pools',
             'jmp_proportional', 'patch_similarity', 'similarity_pruning')


@pytest.mark.parametrize('name', [
    pytest.param(name, marks=() if name in MAIN_TIER else pytest.mark.slow)
    for name in DEPLOYED])
def test_every_fixed_budget_runs_in_both_runtimes(name, tmp_path):
    model = small_recognizer(DEPLOYED[name])
    path = export_onnx(ClipClassifier(model), tmp_path / 'model.onnx', CLIP)
    xml = onnx_to_openvino(path, tmp_path / 'model.xml')
    # Batches other than the traced one (2), with and without exact ties.
    for clips, ties in ((torch.randn(3, *CLIP), False),
                        (clips_with_ties(4), True),
                        (torch.randn(1, *CLIP), False)):
        with torch.no_grad():
            reference = ClipClassifier(model)(clips)
        for file, engine in ((path, 'onnxruntime'), (xml, 'openvino')):
            scores = RuntimeModel(file, engine)(clips)
            difference = score_difference(reference, scores)
            assert scores.shape == reference.shape
            assert difference['same_argmax'] == 1 and difference['finite']
            # OpenVINO's kernels round otherwise inside the network: scores
            # of distinct tokens that tie to the last bit in torch may not
            # tie there, so of the block reducers, which score tokens
            # inside the network, only the top class is asked on clips of
            # exact ties. The pixels' ties (input stages) are exact
            # everywhere; ONNX Runtime rounds as torch does.
            if not (ties and engine == 'openvino'
                    and model.backbone.token_reduction.blocks is not None):
                assert difference['relative'] <= 1e-4, (engine, difference)


def test_ppt_decides_per_clip_in_the_exported_graph(tmp_path):
    # A threshold between the clips' statistics: some pool, some prune,
    # in one batch (torch.where in the graph, not the traced clips' branch).
    setting = dict(blocks=dict(type='PPT', blocks=(1, ), r=10))
    model = small_recognizer(setting)
    clips = torch.cat([clips_with_ties(2), torch.randn(2, *CLIP)])
    reducer = model.backbone.token_reduction.blocks
    reducer.observing = True
    with torch.no_grad():
        ClipClassifier(model)(clips)
    values = reducer.observations()['statistic'].sort().values
    reducer.observing = False
    reducer.threshold = float((values[1] + values[2]) / 2)
    reducer.reset_counts()
    with torch.no_grad():
        reference = ClipClassifier(model)(clips)
    counts = reducer.branch_counts()
    assert counts.get('pool') and counts.get('prune'), counts
    path = export_onnx(ClipClassifier(model), tmp_path / 'ppt.onnx', CLIP)
    for engine in ('onnxruntime', 'openvino'):
        difference = score_difference(reference,
                                      RuntimeModel(path, engine)(clips))
        assert difference['relative'] <= 1e-4, (engine, difference)


class _StableSorts(nn.Module):
    def forward(self, x):
        return (x.argsort(dim=1, stable=True),
                x.argsort(dim=1, descending=True, stable=True),
                x.to(torch.uint8).argsort(dim=1, stable=True))


def test_stable_sorts_keep_the_order_of_ties_in_both_runtimes(tmp_path):
    # The workarounds of mmtokred.deploy.stable_sort: TopK breaks ties by
    # index, as torch's stable sort does (ascending and descending), in
    # OpenVINO too, read from ONNX or from its IR.
    x = torch.tensor([[2., 1., 2., 1., 0., 2., 1., 0.]] * 2)
    x[1] = x[1].flip(0)
    path = export_onnx(_StableSorts(), tmp_path / 'sorts.onnx', (8, ))
    expected = [t.numpy() for t in _StableSorts()(x)]
    import onnxruntime as ort
    session = ort.InferenceSession(str(path),
                                   providers=['CPUExecutionProvider'])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for index, want in enumerate(expected):
        np.testing.assert_array_equal(got[index], want)
    core = openvino.Core()
    from_onnx = core.read_model(str(path))
    assert make_topk_stable(from_onnx) == 3
    from_ir = core.read_model(str(onnx_to_openvino(path, tmp_path / 's.xml')))
    for model in (from_onnx, from_ir):
        got = core.compile_model(model, 'CPU')(x.numpy())
        for index, want in enumerate(expected):
            np.testing.assert_array_equal(got[index], want)
    # What the runtime runs, from either file: the first output.
    for file in (path, tmp_path / 's.xml'):
        np.testing.assert_array_equal(
            RuntimeModel(file, 'openvino')(x).numpy(), expected[0])


@pytest.mark.parametrize('setting,match', [
    (THRESHOLD, r'NEPAM with a threshold.*ratio= or num_windows='),
    (dict(blocks=dict(type='ToMe', r=8, threshold=0.9)),
     r'ToMe with a similarity threshold.*r='),
    (FIXED_BUDGETS['token_pruning_random'],
     r"importance='random'.*choose another importance"),
])
def test_settings_another_runtime_cannot_follow_are_refused(setting, match):
    model = small_recognizer(setting)
    with pytest.raises(ValueError,
                       match=r'my\.py cannot be exported: .*' + match):
        check_exportable(model.backbone, 'my.py')


def test_runtime_model_errors_name_the_field(tmp_path):
    path = export_onnx(ClipClassifier(small_recognizer(None)),
                       tmp_path / 'm.onnx', CLIP)
    with pytest.raises(ValueError, match=r"engine must be one of \("):
        RuntimeModel(path, 'tensorrt')
    with pytest.raises(ValueError, match='precision must be one of'):
        RuntimeModel(path, 'openvino', 'int8')
    with pytest.raises(ValueError, match="ONNX Runtime's CPU provider"):
        RuntimeModel(path, 'onnxruntime', 'bf16')
    with pytest.raises(FileNotFoundError, match='tools/export.py'):
        RuntimeModel(tmp_path / 'missing.onnx', 'onnxruntime')
    xml = onnx_to_openvino(path, tmp_path / 'm.xml')
    with pytest.raises(ValueError, match='onnxruntime runs .onnx files'):
        RuntimeModel(xml, 'onnxruntime')
    for file, engine in ((path, 'onnxruntime'), (xml, 'openvino')):
        runtime = RuntimeModel(file, engine)
        assert runtime.clip_shape == CLIP
        with pytest.raises(ValueError, match=r'takes \(N, 3, 8, 64, 64\)'):
            runtime(torch.randn(1, 3, 16, 64, 64))
        with pytest.raises(ValueError, match='clips of shape'):
            runtime(torch.randn(3, 8, 64, 64))


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_openvino_half_precision(precision, tmp_path):
    model = small_recognizer(FIXED_BUDGETS['nepam_tome_proportional'])
    path = export_onnx(ClipClassifier(model), tmp_path / 'm.onnx', CLIP)
    capability = precision.replace('bf16', 'BF16').replace('fp16', 'FP16')
    if capability not in openvino.Core().get_property(
            'CPU', 'OPTIMIZATION_CAPABILITIES'):
        with pytest.raises(ValueError, match=f'no {capability}'):
            RuntimeModel(path, 'openvino', precision)
        return
    clips = torch.randn(8, *CLIP)
    rows = compare_outputs(model, path, ['openvino'], clips, precision)
    assert rows[0]['engine'] == 'torch' and rows[1]['precision'] == precision
    assert rows[1]['finite'] and rows[1]['same_argmax'] == 1.0, rows


def test_export_tool_writes_checks_and_refuses(tiny_checkpoint, tmp_path):
    out = tmp_path / 'tiny.xml'
    result = run_tool([
        sys.executable, 'tools/export.py',
        str(TINY_CONFIG).replace('dense', 'nepam'), tiny_checkpoint,
        '--format', 'openvino', '--out', str(out), '--check', 'onnxruntime',
        'openvino'])
    assert out.is_file() and out.with_suffix('.bin').is_file()
    assert 'token reduction: input NEPAM' in result.stdout
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines)
                  if line.startswith('engine '))
    end = lines[header].index('relative') + len('relative')
    differences = [float(line[:end].split()[-1])
                   for line in lines[header + 2:header + 5]]
    assert len(differences) == 3 and max(differences) <= 1e-4, result.stdout
    refused = run_tool([
        sys.executable, 'tools/export.py', str(TINY_CONFIG), tiny_checkpoint,
        '--format', 'onnx', '--out', str(tmp_path / 'x.onnx'),
        '--cfg-options', 'model.backbone.token_reduction.input.type=NEPAM',
        'model.backbone.token_reduction.input.threshold=0.5'], check=False)
    assert refused.returncode != 0
    assert 'cannot be exported' in refused.stderr
    assert 'Traceback' not in refused.stderr


def test_test_loop_gives_the_torch_predictions(video_data, tiny_checkpoint,
                                               tmp_path):
    config = str(TINY_CONFIG).replace('dense', 'nepam')
    onnx_path = tmp_path / 'tiny.onnx'
    run_tool([sys.executable, 'tools/export.py', config, tiny_checkpoint,
              '--format', 'onnx', '--out', str(onnx_path)])
    xml = onnx_to_openvino(onnx_path, tmp_path / 'tiny.xml')
    runs = {'torch': [tiny_checkpoint],
            'onnxruntime': ['--backend', 'onnxruntime', '--model',
                            str(onnx_path)],
            'openvino': ['--backend', 'openvino', '--model', str(xml)]}
    metrics, predictions = {}, {}
    for name, extra in runs.items():
        dump = tmp_path / f'{name}.pkl'
        result = run_tool([
            sys.executable, 'tools/test.py', config, *extra, '--dump',
            str(dump), '--work-dir', str(tmp_path / name), '--cfg-options',
            *data_options(video_data)])
        metrics[name] = test_metrics(result.stdout + result.stderr)
        with open(dump, 'rb') as f:
            predictions[name] = pickle.load(f)
        if name != 'torch':
            assert f'ExportedRecognizer: {extra[-1]} in {name}' in \
                result.stdout + result.stderr
            assert 'token reduction: input NEPAM' in \
                result.stdout + result.stderr
    assert metrics['onnxruntime'] == metrics['torch'] == metrics['openvino']
    for name in ('onnxruntime', 'openvino'):
        for ours, theirs in zip(predictions[name], predictions['torch']):
            assert int(ours['pred_label']) == int(theirs['pred_label'])
            assert torch.allclose(ours['pred_score'], theirs['pred_score'],
                                  atol=1e-5)


def test_test_tool_backend_usage_errors(tiny_checkpoint, tmp_path):
    for extra, message in (
            (['--backend', 'onnxruntime'], '--backend and --model go'),
            (['--model', 'x.onnx'], '--backend and --model go'),
            ([tiny_checkpoint, '--backend', 'openvino', '--model', 'x.xml'],
             'not with'),
            (['--precision', 'bf16'], '--precision is an option of')):
        result = run_tool([sys.executable, 'tools/test.py', str(TINY_CONFIG),
                           *extra], check=False)
        assert result.returncode == 2 and message in result.stderr, extra


@pytest.mark.slow
def test_benchmark_engines_side_by_side(tmp_path):
    out = tmp_path / 'engines.json'
    result = run_tool([
        sys.executable, 'tools/benchmark.py', str(TINY_CONFIG).replace(
            'dense', 'nepam'), '--engines', 'torch', 'onnxruntime',
        'openvino', '--dtype', 'fp32', 'bf16', '--repeats', '1', '--json',
        str(out)])
    figures = json.loads(out.read_text())
    ran = {(row['model'], row['engine'], row['dtype'])
           for row in figures['rows']}
    for model in ('stock', 'dense', 'ours'):
        for engine in ('torch', 'onnxruntime', 'openvino'):
            assert (model, engine, 'fp32') in ran
        assert (model, 'torch', 'bf16') in ran
    assert any(skip['engine'] == 'onnxruntime' and skip['dtype'] == 'bf16'
               for skip in figures['skipped'])
    for row in figures['rows']:
        if row['dtype'] == 'fp32':
            assert row['vs_torch']['relative'] <= 1e-4, row
    assert 'fastest dense in fp32: ' in result.stdout
    assert 'vs fastest dense' in result.stdout
