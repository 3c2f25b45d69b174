"""NEPAM's threshold for a mean FLOPs target (tools/calibrate.py --method
nepam_threshold, mmtokred/experiments/threshold_budget.py)."""
import re
import sys

import pytest
import torch
from conftest import ROOT, run_tool
from mmengine.config import Config

from mmtokred.data import write_action_dataset
from mmtokred.experiments.clips import Clips, recogniser
from mmtokred.experiments.threshold_budget import (ThresholdBudget,
                                                   least_threshold)
from mmtokred.measure.flops import count_gflops

PROXY = ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'


@pytest.fixture(scope='module')
def actions(tmp_path_factory):
    """20 clips a class for calibration, 20 held out (200 each)."""
    root = tmp_path_factory.mktemp('threshold_actions')
    return write_action_dataset(str(root), dict(train=20, test=20))


def proxy_cfg(paths):
    cfg = Config.fromfile(PROXY)
    for split in ('train', 'test'):
        cfg.merge_from_dict({f'{split}_dataloader': dict(dataset=dict(
            ann_file=str(paths[split]),
            data_prefix=dict(video=str(paths['videos']))))})
    return cfg


def test_least_threshold_is_the_least_that_meets_the_mean():
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.4]])
    costs = torch.tensor([1., 0.8, 0.6, 0.4])  # by windows merged
    # Means of 1, 0.9, 0.8, 0.7, ... as the six scores pass one by one.
    assert least_threshold(scores, costs, 1.) == 0.
    assert least_threshold(scores, costs, 0.9) == pytest.approx(0.15)
    assert least_threshold(scores, costs, 0.75) == pytest.approx(0.35)
    every = least_threshold(scores, costs, 0.4)
    assert every > 0.9
    with pytest.raises(ValueError, match='merging every window spends 0.400'):
        least_threshold(scores, costs, 0.3)


def test_calibrated_threshold_meets_the_mean_on_held_out_clips(
        actions, tmp_path):
    """Calibrated on the training clips, the threshold's mean FLOPs on the
    held-out test clips, counted in forward passes, is within 0.03 of the
    target; and each clip keeps its own share."""
    checkpoint = tmp_path / 'proxy.pth'
    run_tool([sys.executable, 'tools/init_checkpoint.py', str(PROXY),
              str(checkpoint)])
    out = tmp_path / 'threshold.py'
    options = [f'{split}_dataloader.dataset.{key}={value}'
               for split in ('train', 'test')
               for key, value in (('ann_file', actions[split]),
                                  ('data_prefix.video', actions['videos']))]
    result = run_tool([
        sys.executable, 'tools/calibrate.py', str(PROXY), str(checkpoint),
        '--method', 'nepam_threshold', '--flops', '0.6', '--clips', '200',
        '--held-out', 'test', '--out', str(out), '--cfg-options', *options])
    held_out = float(re.search(r'held out: 200 clips .*: mean FLOPs '
                               r'([\d.]+)', result.stdout).group(1))
    assert held_out == pytest.approx(0.6, abs=0.03), result.stdout
    assert re.search(r'agreement [\d.]+%', result.stdout)

    cfg = Config.fromfile(str(out))
    reduction = cfg.model.backbone.token_reduction
    assert reduction.input.type == 'NEPAM' and reduction.input.threshold > 0
    data = proxy_cfg(actions)
    model = recogniser(data, device='cpu')
    clips = Clips(data, 'test', 'val', batch_size=8)
    views = [view for batch in clips.batches
             for view in model.data_preprocessor(batch)['inputs']]
    with torch.no_grad():
        dense = count_gflops(lambda: model.backbone(views[0]))
        model.backbone.set_token_reduction(reduction.to_dict())
        ratios = torch.tensor([count_gflops(lambda v=v: model.backbone(v))
                               for v in views]) / dense
    assert len(ratios) == 200
    assert float(ratios.mean()) == pytest.approx(0.6, abs=0.03)
    assert float(ratios.mean()) == pytest.approx(held_out, abs=2e-3)
    assert ratios.min() < 0.5 < 0.7 < ratios.max()  # clips differ


def test_budget_refuses_what_it_cannot_reach(actions):
    cfg = proxy_cfg(actions)
    budget = ThresholdBudget(cfg.model, window=(1, 2, 2))
    clips = Clips(cfg, 'train', 'val', 8, batch_size=8)
    scores = budget.scores(cfg, clips.batches)
    assert scores.shape == (8, budget.windows)
    with pytest.raises(ValueError, match='FLOPs target must be in'):
        budget.threshold_for(scores, 0.)
    with pytest.raises(ValueError, match='cannot reach a mean FLOPs of 0.1'):
        budget.threshold_for(scores, 0.1)


def test_budget_refuses_a_distance_before_any_clip_is_read():
    """tools/calibrate.py --options distance=cosine stopped only after
    decoding every clip."""
    with pytest.raises(ValueError, match="distance must be one of "
                       r"\('l1', 'l2'\), got 'cosine'"):
        ThresholdBudget(Config.fromfile(str(PROXY)).model, (1, 2, 2),
                        'cosine')
