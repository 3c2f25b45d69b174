"""tools/calibrate.py and the search behind it."""
import math
import re
import sys

import pytest
import torch
from conftest import ROOT, TINY_CONFIG, load_tool, run_tool
from mmaction.registry import MODELS
from mmengine.config import Config

from mmtokred.experiments import calibration, search_space
from mmtokred.experiments.calibrated_config import calibrated_config
from mmtokred.experiments.calibration import (Calibrator, Candidate,
                                              clearly_better,
                                              format_candidates)
from mmtokred.experiments.clips import Clips, recogniser
from mmtokred.experiments.recipes import (METHODS, BlockRecipe, Grid,
                                          all_blocks, half_merged,
                                          model_grid, tome_stage)
from mmtokred.experiments.search_space import SearchSpace, Shape
from mmtokred.measure.flops import count_gflops
from mmtokred.measure.forward import forward_fn

PROXY = ROOT / 'configs' / 'proxy' / 'videomae_proxy_dense.py'
PROXY_NEPAM = ROOT / 'configs' / 'proxy' / 'videomae_proxy_nepam.py'


@pytest.fixture(scope='module')
def actions(small_actions):
    return small_actions


@pytest.fixture(scope='module')
def checkpoint(proxy_checkpoint):
    return proxy_checkpoint


def options(paths):
    return [f'train_dataloader.dataset.ann_file={paths["train"]}',
            f'train_dataloader.dataset.data_prefix.video={paths["videos"]}',
            'val_dataloader.batch_size=3']


def proxy_cfg(paths, config=PROXY):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(train_dataloader=dict(dataset=dict(
        ann_file=str(paths['train']),
        data_prefix=dict(video=str(paths['videos']))))))
    return cfg


def calibrator(paths, checkpoint, method, clips=6):
    cfg = proxy_cfg(paths)
    grid = model_grid(cfg)
    return Calibrator(cfg, recogniser(cfg, checkpoint, 'cpu'),
                      SearchSpace(method, grid.depth, grid.tokens),
                      Clips(cfg, 'train', 'val', clips, batch_size=4))


@pytest.mark.parametrize('method,target', [('tome', 0.6),
                                           ('nepam+jmp', 0.45)])
def test_search_stays_within_the_target_and_is_deterministic(
        actions, checkpoint, method, target):
    runs = [calibrator(actions, checkpoint, method).search(
        target, progress=False) for _ in range(2)]
    (best, tried), (again, _) = runs
    assert best.flops_ratio <= target
    assert all(c.flops_ratio <= target for c in tried)
    assert best.reduction == again.reduction and best.kl == again.kl
    taken = [c for c in tried if c.taken]
    assert taken[0].move == 'default shape' and taken[-1] is best
    assert len(tried) > 3  # every coordinate was tried
    assert all(c.kl >= 0 and 0 <= c.agreement <= 1 for c in tried)
    # What the model counts for the chosen reduction is what was predicted.
    model = recogniser(proxy_cfg(actions), device='cpu')
    count = forward_fn(model, torch.randn(1, 1, 3, 8, 64, 64), False)
    dense = count_gflops(count)
    model.backbone.set_token_reduction(best.reduction)
    assert count_gflops(count) / dense == best.flops_ratio


def test_target_one_returns_no_reduction(actions, checkpoint):
    best, tried = calibrator(actions, checkpoint, 'nepam+tome').search(
        1.0, progress=False)
    assert len(tried) == 1 and best.reduction is None
    assert best.kl == pytest.approx(0, abs=1e-12) and best.agreement == 1


@pytest.mark.parametrize('method', ['tome', 'ppt', 'nepam_jmp'])
def test_the_default_shape_is_the_hand_chosen_schedule(method):
    """Untilted, the search's schedule is the sweep's default at the same
    amount: the search starts from it."""
    grid = Grid(tokens=256, depth=8)
    space = SearchSpace(method.replace('_', '+'), grid.depth, grid.tokens)
    first = 256 - 3 * round(0.1 * 256 / 4) if space.input else 256
    for amount in (0.1, 0.2):
        ours = space.token_reduction(space.start(), amount, first, 8)
        hand = METHODS[method].make(amount, grid)
        assert ours == hand


def test_tilt_moves_removal_and_blocks_give_way():
    space = SearchSpace('tome', depth=4, tokens=64)
    # Every block at half its tokens: each cut to what it can spend.
    assert space.counts(Shape(), 1., 64, 8) == [32, 16, 8, 4]
    # Weights 2, 4/3, 2/3, 0 of 8 tokens each.
    assert space.counts(Shape(tilt=1.), 0.25, 64, 8) == [16, 11, 5, 0]
    pruning = SearchSpace('prune', depth=4, tokens=64)
    assert pruning.blocks == [1, 2]
    assert pruning.counts(Shape(tilt=2.), 0.9, 64, 8) == [56, 0]


def test_moves_step_every_coordinate():
    moves = dict(SearchSpace('nepam+ppt', depth=4, tokens=64).moves(
        Shape(ratio=0.1)))
    assert moves['tilt +0.25'].tilt == 0.25
    assert moves['nepam ratio 0.15'].ratio == 0.15
    assert moves['nepam window 2x2x2'].window == (2, 2, 2)
    assert {moves['threshold 2'].threshold,
            moves['threshold 0.5'].threshold} == {2., 0.5}  # PPT's is 1
    assert moves['proportional attention on'].proportional_attention
    jmp = SearchSpace('jmp', depth=4, tokens=64, options=dict(threshold=0.9))
    assert [m.threshold for name, m in jmp.moves(Shape())
            if name.startswith('threshold')] == [0.65]  # 1.15 is no cosine
    assert 'tilt +0.125' in dict(jmp.moves(Shape(), scale=0.5))
    nepam = dict(SearchSpace('nepam', depth=4, tokens=64).moves(Shape()))
    assert not any(name.startswith(('tilt', 'nepam ratio', 'threshold'))
                   for name in nepam)


def test_bad_method_is_named():
    with pytest.raises(ValueError, match='method'):
        SearchSpace('evit', depth=4, tokens=64)


@pytest.mark.parametrize('method, options, says', [
    ('tome', dict(r=4), "options of tome: ['r'] are what the search sets"),
    ('ppt', dict(blocks=(1, ), importance='norm'),
     "['blocks'] are what the search sets"),
    ('nepam', dict(importance='norm'), 'it has no block reducer to take')])
def test_options_the_search_sets_are_refused(method, options, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        SearchSpace(method, depth=4, tokens=64, options=options)


def test_bad_targets_and_clips_raise(actions, checkpoint):
    with pytest.raises(ValueError, match='FLOPs target'):
        calibrator(actions, checkpoint, 'tome').search(1.5)
    with pytest.raises(ValueError, match='clips'):
        Clips(proxy_cfg(actions), 'train', num_clips=0)
    with pytest.raises(ValueError, match='split'):
        Clips(proxy_cfg(actions), 'holdout', num_clips=4)


def calibrate(paths, checkpoint, out, *extra, launcher=(), config=PROXY):
    result = run_tool([*launcher, 'tools/calibrate.py', str(config),
                       checkpoint, '--clips', '6', '--out', str(out), *extra,
                       '--cfg-options', *options(paths)],
                      env={'PORT': '29531'})
    return result.stdout + result.stderr


def written_reduction(path):
    return Config.fromfile(str(path)).model.backbone.token_reduction


@pytest.mark.slow
def test_tool_writes_a_config_that_inherits_and_builds(actions, checkpoint,
                                                       tmp_path):
    out = tmp_path / 'configs' / 'calibrated.py'
    output = calibrate(actions, checkpoint, out, '--flops', '0.5',
                       '--method', 'ppt', launcher=[sys.executable])
    assert re.search(r'chosen \(\d+ candidates, [\d.]+ min, 1 process\): '
                     r'FLOPs 0\.[0-5]\d\d of dense', output)
    assert re.search(r'\*\s+default shape', output) and 'wrote' in output
    text = out.read_text()
    assert '_base_' in text and 'ppt at <= 0.5 of the dense FLOPs' in text
    cfg, base = Config.fromfile(str(out)), Config.fromfile(str(PROXY))
    reduction = cfg.model.backbone.pop('token_reduction')
    assert reduction.blocks.type == 'PPT'
    assert cfg.model == base.model  # nothing else changed
    model = MODELS.build(Config.fromfile(str(out)).model)
    assert model.backbone.token_reduction.blocks is not None


@pytest.mark.slow
def test_written_config_replaces_the_base_reduction(actions, checkpoint,
                                                    tmp_path):
    out = tmp_path / 'tome.py'
    calibrate(actions, checkpoint, out, '--flops', '0.7', '--method', 'tome',
              launcher=[sys.executable], config=PROXY_NEPAM)
    reduction = written_reduction(out)
    assert 'input' not in reduction and reduction.blocks.type == 'ToMe'


@pytest.mark.slow
def test_two_processes_choose_what_one_does(actions, checkpoint, tmp_path):
    one, two = tmp_path / 'one.py', tmp_path / 'two.py'
    calibrate(actions, checkpoint, one, '--flops', '0.6',
              launcher=[sys.executable])
    output = calibrate(actions, checkpoint, two, '--flops', '0.6',
                       '--launcher', 'pytorch',
                       launcher=['bash', 'tools/torchrun.sh', '2'])
    assert '2 processes' in output
    assert written_reduction(one) == written_reduction(two)
    assert written_reduction(one) is not None


def test_a_move_must_beat_the_noise_of_the_clips():
    def candidate(kls):
        kls = torch.tensor(kls, dtype=torch.float64)
        return Candidate(Shape(), 'x', 0.5, 0.5, None, kl=float(kls.mean()),
                         agreement=1., kls=kls)

    current = candidate([0.2, 0.2, 0.2, 0.2])
    assert clearly_better(candidate([0.1, 0.1, 0.1, 0.1]), current)
    # A lower mean from one clip, worse on the others: noise.
    assert not clearly_better(candidate([0.3, 0.3, 0.3, -0.4]), current)
    assert not clearly_better(current, current)


class ScriptedCalibrator(Calibrator):
    """The search over ToMe's shape without a model: every shape meets the
    target, the KL falls towards tilt 0.75 and rises with proportional
    attention, the same on each of 4 clips."""

    def __init__(self) -> None:
        self.space = SearchSpace('tome', depth=4, tokens=64)
        self.clips = range(4)

    def at_target(self, shape, move, target):
        return Candidate(shape, move, 0.5, target, None)

    def measure(self, candidate):
        shape = candidate.shape
        kl = (shape.tilt - 0.75)**2 + 0.1 * shape.proportional_attention
        candidate.kls = torch.full((4, ), kl, dtype=torch.float64)
        candidate.kl, candidate.agreement = kl, 1.
        return candidate


def _report(capsys):
    """The search's lines, with its times as T."""
    out = capsys.readouterr().out
    return re.sub(r'[\d.]+ (s|min)\b', 'T s', out).splitlines()


def test_the_search_reports_each_round_and_where_it_stopped(capsys):
    best, tried = ScriptedCalibrator().search(0.5)
    assert best.shape.tilt == 0.75
    lines = _report(capsys)
    assert lines[0] == ('search: each round tries 3 moves (a step of each '
                        'coordinate each way), each bisected to the target '
                        'and run on the 4 clips; it ends when none helps, '
                        'after at most 20 rounds')
    assert lines[1] == ('default shape: FLOPs 0.500, KL 0.5625, agreement '
                        '100.0% (T s a candidate: about T s a round)')
    took = 'took tilt {}: FLOPs 0.500, KL {}, agreement 100.0% (KL was {})'
    assert lines[2:] == [
        'round 1 (at most 20): 3 moves in T s; ' + took.format(
            '+0.25', 0.25, 0.5625),
        'round 2 (at most 20): 2 moves in T s; ' + took.format(
            '+0.5', 0.0625, 0.25),
        'round 3 (at most 20): 2 moves in T s; ' + took.format(
            '+0.75', 0, 0.0625),
        'round 4 (at most 20): 2 moves in T s; none clearly better: '
        'halving the steps of tilt and ratio',
        'round 5 (at most 20): 2 moves in T s; none clearly better',
        f'converged after 5 rounds: {len(tried)} candidates in T s',
    ]
    assert len(tried) == 1 + 3 + 2 + 2 + 2 + 2


def test_the_search_says_when_it_hit_the_round_limit(capsys, monkeypatch):
    monkeypatch.setattr(calibration, 'MAX_ROUNDS', 2)
    best, tried = ScriptedCalibrator().search(0.5)
    assert best.shape.tilt == 0.5
    lines = _report(capsys)
    assert [line.split(';')[0] for line in lines[2:4]] == [
        'round 1 (at most 2): 3 moves in T s',
        'round 2 (at most 2): 2 moves in T s']
    assert lines[4:] == ['stopped at the limit of 2 rounds, not converged: '
                         '6 candidates in T s']
    ScriptedCalibrator().search(0.5, progress=False)
    assert capsys.readouterr().out == ''


# ----------------------------------------------------- the tool's own checks
@pytest.fixture(scope='module')
def tool():
    return load_tool('calibrate')


def parse(tool, monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['calibrate.py', *argv])
    return tool.parse_args()


@pytest.mark.parametrize('flops', ['1.0', '1', '1.5', '0', '-0.2', 'nan',
                                   'half'])
def test_a_target_outside_0_1_stops_before_any_clip_is_read(
        tool, monkeypatch, capsys, flops):
    with pytest.raises(SystemExit) as stop:
        parse(tool, monkeypatch, 'CONFIG', 'CKPT', '--flops', flops,
              '--out', 'x.py')
    assert stop.value.code == 2
    assert (f'argument --flops: {flops} is not a number in (0, 1) (1 is '
            'dense: nothing to calibrate)') in capsys.readouterr().err


@pytest.mark.parametrize('out', ['configs', 'calibrated.txt'])
def test_out_must_be_a_config_file(tool, monkeypatch, capsys, out):
    with pytest.raises(SystemExit):
        parse(tool, monkeypatch, 'C', 'K', '--flops', '0.5', '--out',
              str(ROOT / out))
    assert '--out must name the .py config file to write' in \
        capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--clips', '--batch-size'])
def test_counts_must_be_positive(tool, monkeypatch, capsys, flag):
    with pytest.raises(SystemExit):
        parse(tool, monkeypatch, 'C', 'K', '--flops', '0.5', '--out', 'x.py',
              flag, '0')
    assert f'argument {flag}: 0 is not an integer >= 1' in \
        capsys.readouterr().err


def test_held_out_is_refused_where_it_is_ignored(tool, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse(tool, monkeypatch, 'C', 'K', '--flops', '0.5', '--out',
              'x.py', '--method', 'tome', '--held-out', 'test')
    assert '--held-out is an option of --method nepam_threshold' in \
        capsys.readouterr().err


def chosen(tool, monkeypatch, config, *argv):
    args = parse(tool, monkeypatch, str(config), 'K', '--flops', '0.5',
                 '--out', 'x.py', '--method', 'nepam_threshold', *argv)
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(args.cfg_options or {})
    tool.choose_splits(args, cfg)
    return args


def test_held_out_on_the_calibration_clips_is_refused(tool, monkeypatch):
    with pytest.raises(SystemExit, match='--held-out test reads the same '
                       'list as --split test'):
        chosen(tool, monkeypatch, PROXY, '--split', 'test', '--held-out',
               'test')
    test_list = Config.fromfile(str(PROXY)).test_dataloader.dataset.ann_file
    cfg_options = ['--cfg-options', 'val_dataloader.dataset.ann_file='
                   f'{test_list}']  # val and test: one list
    with pytest.raises(SystemExit, match='same list'):
        chosen(tool, monkeypatch, PROXY, '--split', 'val', '--held-out',
               'test', *cfg_options)
    args = chosen(tool, monkeypatch, PROXY, '--held-out', 'test')
    assert (args.split, args.pipeline, args.held_out) == ('train', 'val',
                                                          'test')


def test_a_config_with_a_test_loader_only_calibrates_on_it(tool,
                                                           monkeypatch):
    """configs/videomae_*.py and configs/demo/*: the README's lines as
    written (they stopped with KeyError: 'val_dataloader')."""
    args = chosen(tool, monkeypatch, TINY_CONFIG)
    assert (args.split, args.pipeline) == ('test', 'test')
    with pytest.raises(SystemExit, match='--split train: .* has no '
                       'train_dataloader; it has test_dataloader'):
        chosen(tool, monkeypatch, TINY_CONFIG, '--split', 'train')
    with pytest.raises(SystemExit, match='--pipeline val: .* has no '
                       'val_dataloader'):
        chosen(tool, monkeypatch, TINY_CONFIG, '--pipeline', 'val')


def test_the_written_config_still_loads_where_it_is_moved(tmp_path):
    text = calibrated_config(
        str(PROXY), dict(blocks=dict(type='ToMe', r=4)), False, ['note'])
    moved = tmp_path / 'elsewhere' / 'deeper' / 'calibrated.py'
    moved.parent.mkdir(parents=True)
    moved.write_text(text)
    cfg = Config.fromfile(str(moved))
    assert cfg.model.backbone.token_reduction.blocks.r == 4


def test_too_few_clips_for_the_mean_are_said(tool):
    # The clips spread 0.107 (sample std): +-0.02 (95%) needs 110 clips.
    per_clip = torch.tensor([0.4, 0.6] * 4, dtype=torch.float64)
    error, needed = tool.mean_error(per_clip, 0.02)
    std = float(per_clip.std())
    assert error == pytest.approx(1.96 * std / 8 ** 0.5)
    assert needed == math.ceil((1.96 * std / 0.02) ** 2) == 110
    assert tool.mean_error(torch.full((5, ), 0.5), 0.02)[1] == 2


@pytest.mark.slow
def test_the_threshold_run_warns_below_the_clips_it_needs(actions,
                                                          checkpoint,
                                                          tmp_path):
    output = calibrate(actions, checkpoint, tmp_path / 'thr.py', '--flops',
                       '0.5', '--method', 'nepam_threshold',
                       launcher=[sys.executable])
    assert re.search(r'mean FLOPs 0\.\d+ of dense, \+-0\.\d+ \(95%\)',
                     output)
    assert re.search(r'warning: 6 clips are too few to know the mean FLOPs '
                     r'within \+-0\.02 of dense \(95%\).* pass --clips \d+',
                     output)


def test_the_search_space_reads_every_difference_from_the_recipe(
        monkeypatch):
    """No reducer's name is special: a pruning laid out as ToMe is (every
    block, r not listed by block, half the tokens a block) reads so."""
    monkeypatch.setitem(search_space.BLOCK_REDUCERS, 'prune', BlockRecipe(
        'TokenPruning', tome_stage, half_merged, all_blocks,
        lists_blocks=False))
    space = SearchSpace('prune', depth=4, tokens=64)
    assert space.blocks == [0, 1, 2, 3]
    assert space.token_reduction(Shape(), 1., 64, 8) == dict(
        blocks=dict(type='TokenPruning', r=[32, 16, 8, 4]))
    assert not any(name.startswith('threshold')
                   for name, _ in space.moves(Shape()))


def test_candidates_print_as_aligned_columns():
    tried = [Candidate(Shape(), 'default shape', 0.5, 0.498,
                       dict(blocks=dict(type='ToMe', r=[3, 3])), kl=0.0123,
                       agreement=0.97, taken=True),
             Candidate(Shape(), 'tilt +0.25', 0.5, 0.5, None, kl=0.02,
                       agreement=0.9)]
    header, taken, other = format_candidates(tried).splitlines()
    column = header.index('token_reduction')
    assert taken.startswith('*') and not other.startswith('*')
    assert taken[column:] == '{"blocks": {"type": "ToMe", "r": [3, 3]}}'
    assert other[column:] == 'null'
    assert header.index('KL') + 2 == other.index('0.02000') + 7
