"""Accuracy kept per FLOP saved: every method over a range of budgets.

Each point runs MMAction2's own test loop (the config's test data set and
metric) with the config's model and one token reduction, and records top-1,
agreement with the dense model's predictions, GFLOPs per view and the
measured speed relative to dense.
"""
import copy
import csv
import json
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.utils import ProgressBar

from .benchmark.compare import forward_fn, seconds_per_batch
from .benchmark.flops import count_gflops


def _chosen_blocks(depth: int) -> List[int]:
    """Three blocks spread over the depth, as PPT's 3, 6, 9 of 12 (from 1)."""
    return sorted({max(0, min(depth - 1, round(depth * f) - 1))
                   for f in (0.25, 0.5, 0.75)})


def _stage_counts(tokens: int, stages: int, keep: float) -> List[int]:
    """Tokens to remove at each of ``stages`` steps so that ``keep`` of
    ``tokens`` is left, the same fraction at each step."""
    per_stage = keep**(1 / stages)
    counts, n = [], tokens
    for _ in range(stages):
        removed = int(round(n * (1 - per_stage)))
        counts.append(removed)
        n -= removed
    return counts


def _nepam_window(window: tuple) -> Callable[[float, int, int], Dict]:

    def reduction(budget: float, tokens: int, depth: int) -> Dict:
        return dict(input=dict(type='NEPAM', window=window, ratio=budget))

    return reduction


_nepam = _nepam_window((2, 2, 2))


def _tome(budget: float, tokens: int, depth: int) -> Dict:
    return dict(blocks=dict(type='ToMe', r=int(budget * tokens / depth)))


def _in_blocks(kind: str) -> Callable[[float, int, int], Dict]:

    def reduction(budget: float, tokens: int, depth: int) -> Dict:
        blocks = _chosen_blocks(depth)
        return dict(blocks=dict(type=kind, blocks=blocks,
                                r=_stage_counts(tokens, len(blocks),
                                                1 - budget)))

    return reduction


def _patchsim(budget: float, tokens: int, depth: int) -> Dict:
    return dict(input=dict(type='PatchSimilarityPruning', ratio=budget))


def _nepam_jmp(budget: float, tokens: int, depth: int) -> Dict:
    # NEPAM at its default, then JMP in the blocks for the rest.
    merged = _nepam(0.57, tokens, depth)
    blocks = _chosen_blocks(depth)[:2]
    merged['blocks'] = dict(type='JMP', blocks=blocks,
                            r=_stage_counts(tokens // 2, len(blocks),
                                            1 - budget))
    return merged


#: method -> (token_reduction for a budget, default budgets). Budgets are
#: what the method removes: NEPAM, the fraction of windows merged (2x2x2;
#: nepam_t: 2x1x1, pairs in time; nepam_s: 1x2x2, squares in space);
#: ToMe, the tokens merged over all blocks as a fraction of the input;
#: PPT/JMP/progressive pruning, the fraction removed over three blocks;
#: patch-similarity pruning, the fraction pruned at the input; NEPAM+JMP,
#: the fraction JMP removes after NEPAM's default.
METHODS: Dict[str, tuple] = {
    'nepam': (_nepam, (0.25, 0.5, 0.57, 0.75, 1.0)),
    'nepam_t': (_nepam_window((2, 1, 1)), (0.5, 0.75, 1.0)),
    'nepam_s': (_nepam_window((1, 2, 2)), (0.33, 0.5, 0.67, 0.85)),
    'tome': (_tome, (0.3, 0.5, 0.7, 0.85)),
    'ppt': (_in_blocks('PPT'), (0.3, 0.5, 0.7, 0.85)),
    'jmp': (_in_blocks('JMP'), (0.3, 0.5, 0.7, 0.85)),
    'progressive': (_in_blocks('SimilarityPruning'), (0.3, 0.5, 0.7)),
    'patchsim': (_patchsim, (0.2, 0.4, 0.6)),
    'nepam_jmp': (_nepam_jmp, (0.2, 0.4)),
}


def _grid(cfg: Config) -> tuple:
    backbone = cfg.model.backbone
    size = backbone.get('img_size', 224) // backbone.get('patch_size', 16)
    frames = backbone.get('num_frames', 16) // backbone.get('tubelet_size', 2)
    return frames * size * size, backbone.get('depth', 12)


def _evaluate(cfg: Config, checkpoint: str, work_dir: str,
              name: str) -> Dict:
    """Top-1 and the predicted labels of one test run."""
    cfg = copy.deepcopy(cfg)
    dump = Path(work_dir) / f'{name}.pkl'
    evaluator = cfg.test_evaluator
    evaluators = list(evaluator) if isinstance(evaluator,
                                               (list, tuple)) else [evaluator]
    cfg.test_evaluator = evaluators + [
        dict(type='DumpResults', out_file_path=str(dump))
    ]
    cfg.load_from = checkpoint
    cfg.work_dir = work_dir
    cfg.experiment_name = f'sweep_{name}'
    cfg.log_level = 'WARNING'
    cfg.launcher = 'none'
    metrics = Runner.from_cfg(cfg).test()
    with open(dump, 'rb') as f:  # written just now by this process
        results = pickle.load(f)
    predictions = [int(r['pred_score'].argmax()) for r in results]
    return dict(top1=float(metrics['acc/top1']), predictions=predictions)


def _cost(cfg: Config, reductions: Dict[str, Optional[Dict]],
          repeats: int) -> Dict[str, Dict]:
    """GFLOPs per view, and seconds per batch of 8 views measured with the
    points taking turns (one model, its token reduction switched)."""
    backbone = cfg.model.backbone
    shape = (backbone.get('in_channels', 3), backbone.get('num_frames', 16),
             backbone.get('img_size', 224), backbone.get('img_size', 224))
    inputs = torch.randn(8, 1, *shape,
                         generator=torch.Generator().manual_seed(0))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.token_reduction = None
    model = MODELS.build(model_cfg).eval()
    one_view = forward_fn(model, inputs[:1], False)
    batch = forward_fn(model, inputs, False)

    def with_reduction(reduction, forward):

        def run():
            model.backbone.set_token_reduction(reduction)
            return forward()

        return run

    forwards, figures = {}, {}
    for name, reduction in reductions.items():
        figures[name] = dict(
            gflops=count_gflops(with_reduction(reduction, one_view)))
        forwards[name] = with_reduction(reduction, batch)
    seconds = seconds_per_batch(forwards, warmup=1, repeats=repeats)
    for name in figures:
        figures[name]['speedup'] = seconds['dense'] / seconds[name]
    return figures


def sweep(config: str,
          checkpoint: str,
          methods: Sequence[str] = tuple(METHODS),
          budgets: Optional[Dict[str, Sequence[float]]] = None,
          work_dir: str = 'work_dirs/sweep',
          repeats: int = 3,
          cfg_options: Optional[Dict] = None) -> List[Dict]:
    """Evaluate dense and every method at every budget.

    Returns:
        One row per point: method, budget, top1, agreement (fraction of
        test clips predicted as dense predicts them), gflops, flops_ratio and
        speedup (both against dense) and the token_reduction used.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f'unknown methods {unknown}; choose from '
                         f'{tuple(METHODS)}')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    tokens, depth = _grid(cfg)
    points = [('dense', 0., None)]
    for method in methods:
        make, defaults = METHODS[method]
        for budget in (budgets or {}).get(method, defaults):
            points.append((method, budget, make(budget, tokens, depth)))
    Path(work_dir).mkdir(parents=True, exist_ok=True)

    costs = _cost(cfg, {f'{m}@{b}': r for m, b, r in points[1:]} |
                  {'dense': None}, repeats)
    rows, reference = [], None
    progress = ProgressBar(len(points))
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for method, budget, reduction in points:
            point_cfg = copy.deepcopy(cfg)
            point_cfg.model.backbone.token_reduction = reduction
            name = 'dense' if reduction is None else f'{method}@{budget}'
            result = _evaluate(point_cfg, checkpoint, tmp,
                               name.replace('@', '_'))
            if reference is None:
                reference = result['predictions']
            agreement = sum(
                a == b for a, b in zip(result['predictions'],
                                       reference)) / len(reference)
            rows.append(
                dict(method=method, budget=budget, top1=result['top1'],
                     agreement=agreement, gflops=costs[name]['gflops'],
                     flops_ratio=costs[name]['gflops'] /
                     costs['dense']['gflops'],
                     speedup=costs[name]['speedup'],
                     token_reduction=json.dumps(reduction)))
            progress.update()
    return rows


def at_half_flops(rows: List[Dict]) -> List[Dict]:
    """Per method, the point whose FLOPs are closest to half of dense."""
    best: Dict[str, Dict] = {}
    for row in rows:
        if row['method'] == 'dense':
            continue
        current = best.get(row['method'])
        if current is None or abs(row['flops_ratio'] - 0.5) < abs(
                current['flops_ratio'] - 0.5):
            best[row['method']] = row
    return list(best.values())


def write_table(rows: List[Dict], out_prefix: str) -> None:
    """``out_prefix``.csv and .json."""
    Path(out_prefix).parent.mkdir(parents=True, exist_ok=True)
    with open(f'{out_prefix}.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(f'{out_prefix}.json', 'w') as f:
        json.dump(rows, f, indent=2)


def plot_pareto(rows: List[Dict], out_png: str, title: str = '') -> None:
    """Top-1 against GFLOPs and against measured speedup, one line per
    method, dense as a star."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    dense = [r for r in rows if r['method'] == 'dense'][0]
    for axis, key, label in ((axes[0], 'gflops', 'GFLOPs per view'),
                             (axes[1], 'speedup', 'measured speedup vs dense')):
        for method in dict.fromkeys(r['method'] for r in rows):
            if method == 'dense':
                continue
            points = sorted((r[key], 100 * r['top1']) for r in rows
                            if r['method'] == method)
            axis.plot(*zip(*points), marker='o', label=method)
        axis.plot(dense[key], 100 * dense['top1'], marker='*', markersize=14,
                  color='black', linestyle='none', label='dense')
        axis.set_xlabel(label)
        axis.set_ylabel('top-1 (%)')
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out_png, dpi=120)
    plt.close(figure)
