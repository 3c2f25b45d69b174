import subprocess
import sys

import torch

from mmtokred.ops import TokenState


def test_pool_without_sizes_is_plain_mean():
    x = torch.randn(2, 7, 5)
    assert torch.equal(TokenState().pool(x), x.mean(1))


def test_pool_weights_tokens_by_size():
    # Two tokens standing for 3 and 1 patches equal the 4 patches they hold.
    patches = torch.randn(1, 4, 6)
    merged = torch.stack([patches[:, :3].mean(1), patches[:, 3]], dim=1)
    state = TokenState(size=torch.tensor([[[3.], [1.]]]))
    torch.testing.assert_close(state.pool(merged), patches.mean(1))


def test_ops_import_no_openmmlab():
    # Import the subpackage without running mmtokred/__init__.py's imports.
    code = ('import importlib.util, sys, pathlib; '
            "spec = importlib.util.spec_from_file_location('mmtokred_ops', "
            "pathlib.Path('mmtokred/ops/__init__.py'), "
            "submodule_search_locations=['mmtokred/ops']); "
            'module = importlib.util.module_from_spec(spec); '
            "sys.modules['mmtokred_ops'] = module; "
            'spec.loader.exec_module(module); '
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mmengine', 'mmcv', 'mmaction')))")
    from conftest import ROOT
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'
