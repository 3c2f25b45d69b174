"""CUDA problems caught without a GPU: every method and the backbone run on
the meta device under a mode that refuses any operation whose tensors sit on
different devices. A tensor made on the CPU inside a forward pass (an index
list, ``torch.arange`` without a device, a scalar tensor from the host)
would be a device error or a blocking host-to-device copy on a GPU; a value
read back to the host (``.item()``, ``bool()``, ``int()``) fails on meta.
(A Python list used as an index becomes a meta tensor directly, unseen:
``tests/test_backbone_cuda.py``'s sync check catches that one on a GPU.)"""
import pytest
import torch

from conftest import FIXED_BUDGETS, THRESHOLD, OneDevice, build_small


def run_on_meta(token_reduction, batch=2):
    model = build_small(token_reduction).to('meta')
    with torch.no_grad(), OneDevice():
        return model(torch.empty(batch, 3, 8, 64, 64, device='meta'))


@pytest.mark.parametrize('name', ['dense', *FIXED_BUDGETS])
def test_every_method_keeps_to_the_model_device(name):
    out = run_on_meta(FIXED_BUDGETS.get(name))
    assert out.device.type == 'meta' and out.shape == (2, 48)


def test_threshold_mode_reads_its_token_count_back():
    """NEPAM's threshold mode needs the clips' token counts on the host
    (one sync per batch): the only method that must, and meta shows it."""
    with pytest.raises(RuntimeError, match='meta'):
        run_on_meta(THRESHOLD)


def test_the_check_sees_host_tensors():
    x = torch.empty(1, 6, 4, device='meta')
    with OneDevice():
        with pytest.raises(AssertionError, match='mixes devices'):
            x + torch.arange(4)  # made on the host
        with pytest.raises(AssertionError, match='copies a host tensor'):
            x + torch.tensor([1., 2., 3., 4.]).to(x.device)
        x + 1.  # a scalar is fine
        x + torch.tensor(1.)  # and so is a 0-dim tensor
