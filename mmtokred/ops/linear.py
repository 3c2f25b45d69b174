"""The fp32 CPU matrix-product path chosen for the machine.

torch's fp32 ``F.linear`` on CPU goes to its BLAS, MKL in the x86 wheels.
MKL runs its best kernels on Intel CPUs only: on other x86 CPUs it takes its
AVX2 code path at most, so an AMD CPU with AVX-512 (Zen 4, Zen 5) runs at
half its width (F.linear 150-171 GFLOP/s against oneDNN's 334-355 on a Zen
5, a 1568 x 768 @ 768 x 3072 product). oneDNN, which torch also carries
(``torch.ops.mkldnn._linear_pointwise``, the op inductor's CPU fusions
emit), picks its kernels by the instruction sets the CPU reports, whoever
made it. Where MKL's AVX2 path is the CPU's full width (Zen 2 and 3, without
AVX-512) it is as fast as oneDNN's (on 2 Zen 3 cores, 140-156 against
134-141 GFLOP/s at that shape).

:func:`linear` is ``F.linear`` with that choice. 'auto' (the default) takes
oneDNN where torch's BLAS is MKL, the CPU is not Intel's and has AVX-512,
and torch has oneDNN: what :data:`MACHINE` reports, read once at import so
that a compiled graph finds a constant. ``MMTOKRED_CPU_LINEAR`` or
:func:`set_cpu_linear` overrides it ('aten': ``F.linear`` everywhere;
'onednn': oneDNN wherever it is safe). Either way oneDNN runs only fp32 CPU
inference, outside tracing, compiling, exporting, autocast and torch's
dispatch or function modes (FLOP counters, fake tensors); everything else is
``F.linear``. oneDNN's sums run in another order than MKL's: its outputs
differ from ``F.linear``'s by fp32 rounding (the ViT-B dense backbone's by
3.6e-7 at a scale of 1.9).
"""
import platform
from typing import ContextManager, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import has_torch_function

from .kernel_setting import KernelSetting

#: Settings of the fp32 CPU matrix-product path: 'auto' chooses by the
#: machine, 'aten' is ``F.linear``, 'onednn' torch's oneDNN op.
CPU_LINEARS = ('auto', 'aten', 'onednn')
#: The environment variable that sets the path for a whole process.
CPU_LINEAR_ENV = 'MMTOKRED_CPU_LINEAR'

_CPU_LINEAR = KernelSetting(CPU_LINEAR_ENV, CPU_LINEARS)


def set_cpu_linear(path: str) -> str:
    """Set the fp32 CPU matrix-product path ('auto', 'aten' or 'onednn')
    for this process; returns the previous setting."""
    return _CPU_LINEAR.set(path)


def cpu_linear_set_to(path: str) -> ContextManager[None]:
    """:func:`set_cpu_linear` for the duration of a ``with`` block."""
    return _CPU_LINEAR.set_to(path)


def cpu_linear_setting() -> str:
    """The setting as given: 'auto', 'aten' or 'onednn'."""
    return _CPU_LINEAR.value


class MachineReport(NamedTuple):
    """What the machine and torch report that decides the path."""
    #: /proc/cpuinfo's ``vendor_id`` ('GenuineIntel', 'AuthenticAMD', ...),
    #: '' where it does not tell.
    vendor: str
    #: torch's BLAS ('mkl', 'open', ...: ``BLAS_INFO`` of
    #: ``torch.__config__.show()``), '' where it does not tell.
    blas: str
    #: Whether the CPU reports AVX-512 (``avx512f``).
    avx512: bool
    #: Whether torch has oneDNN and its linear op.
    onednn: bool


def _cpuinfo() -> Tuple[str, str]:
    """``vendor_id`` and ``flags`` of the first CPU in /proc/cpuinfo."""
    fields = {}
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                fields.setdefault(key.strip(), value.strip())
                if 'vendor_id' in fields and 'flags' in fields:
                    break
    except OSError:
        pass
    vendor = fields.get('vendor_id', '')
    if not vendor:  # Windows: 'AMD64 Family 25 Model 1 ..., AuthenticAMD'
        vendor = next((name for name in ('GenuineIntel', 'AuthenticAMD')
                       if name in platform.processor()), '')
    return vendor, fields.get('flags', '')


def _blas() -> str:
    for item in torch.__config__.show().replace(',', '\n').splitlines():
        key, _, value = item.strip().partition('=')
        if key == 'BLAS_INFO':
            return value.strip().lower()
    return 'mkl' if torch.backends.mkl.is_available() else ''


def _has_onednn_linear() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return False
    return True


def probe_machine() -> MachineReport:
    """Read :class:`MachineReport` from /proc/cpuinfo and torch."""
    vendor, flags = _cpuinfo()
    return MachineReport(vendor=vendor, blas=_blas(),
                         avx512='avx512f' in flags.split(),
                         onednn=_has_onednn_linear())


def auto_cpu_linear(report: MachineReport) -> Tuple[str, str]:
    """The path 'auto' takes on a machine that reports ``report``, and
    why."""
    if not report.onednn:
        return 'aten', 'torch has no oneDNN'
    if report.blas != 'mkl':
        return 'aten', f"torch's BLAS is {report.blas or 'unknown'}, not MKL"
    if report.vendor in ('GenuineIntel', ''):
        cpu = report.vendor or 'a CPU of unknown make'
        return 'aten', f'MKL BLAS on {cpu}, where MKL runs its best kernels'
    if not report.avx512:
        return 'aten', (f'MKL BLAS on a non-Intel CPU ({report.vendor}) '
                        "without AVX-512: MKL's AVX2 kernels are its full "
                        'width')
    return 'onednn', (f'MKL BLAS on a non-Intel CPU ({report.vendor}) with '
                      'AVX-512, which MKL runs with AVX2 kernels at most')


#: What this machine reports, read once at import.
MACHINE = probe_machine()
#: The path 'auto' takes here and why (:func:`auto_cpu_linear`).
AUTO_CPU_LINEAR = auto_cpu_linear(MACHINE)


def cpu_linear() -> str:
    """The path fp32 CPU inference takes as set: 'aten' or 'onednn'."""
    setting = _CPU_LINEAR.value
    path = AUTO_CPU_LINEAR[0] if setting == 'auto' else setting
    return path if MACHINE.onednn else 'aten'


def cpu_linear_reason() -> str:
    """Which path :func:`cpu_linear` takes, and why."""
    path, setting = cpu_linear(), _CPU_LINEAR.value
    if setting == 'auto':
        why = f'auto: {AUTO_CPU_LINEAR[1]}'
    elif path == setting:
        why = f'set by {CPU_LINEAR_ENV} or set_cpu_linear'
    else:
        why = f'{setting} asked for, but torch has no oneDNN'
    if path == 'onednn':
        why += ('; F.linear for autograd, compiling, tracing, autocast and '
                'other dtypes')
    return f'{path} ({why})'


# torch.compiler's from torch 2.3 and 2.6 on (dynamo's is_compiling before).
_is_compiling = (getattr(torch.compiler, 'is_compiling', None)
                 or torch._dynamo.is_compiling)
_is_exporting = getattr(torch.compiler, 'is_exporting', lambda: False)


def capturing_graph() -> bool:
    """Whether torch is compiling, exporting, tracing or scripting the
    code that runs: the graph it captures is to see ``F.linear``."""
    return (_is_compiling() or _is_exporting() or torch.jit.is_tracing()
            or torch.jit.is_scripting())


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def linear_path(x: Tensor, weight: Tensor,
                bias: Optional[Tensor] = None) -> str:
    """The path :func:`linear` takes for these operands: 'onednn' only
    where :func:`cpu_linear` is oneDNN and the call is fp32 CPU inference
    that nothing observes below the Python level; 'aten' otherwise."""
    # Checked first: the compiler takes these as constants.
    if cpu_linear() == 'aten' or capturing_graph():
        return 'aten'
    operands = (x, weight) if bias is None else (x, weight, bias)
    # Tensor subclasses and proxies (fx) see F.linear; checked before their
    # attributes are read.
    if (not all(isinstance(t, Tensor) for t in operands)
            or has_torch_function(operands)):
        return 'aten'
    if any(t.device.type != 'cpu' or t.dtype != torch.float32
           or t.layout != torch.strided for t in operands):
        return 'aten'
    # oneDNN's op has no derivative.
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return 'aten'
    # Autocast would run F.linear in bf16; FLOP counters and fake tensors
    # (dispatch modes) and function modes expect it; oneDNN may be off.
    if (_autocast_on_cpu() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled()
            or not torch._C._get_mkldnn_enabled()):
        return 'aten'
    # The op makes the input contiguous itself but reads the weight and
    # the bias as they lie (a strided bias gives wrong sums), and needs a
    # vector to multiply.
    if (x.dim() == 0 or not weight.is_contiguous()
            or (bias is not None and not bias.is_contiguous())):
        return 'aten'
    return 'onednn'


def onednn_linear(x: Tensor, weight: Tensor,
                  bias: Optional[Tensor] = None) -> Tensor:
    """``x @ weight.T + bias`` through oneDNN, unchecked: CPU, one dtype,
    no autograd, contiguous weight and bias (:func:`linear_path`). Any rank
    of ``x``: the op folds the leading dimensions."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [],
                                              None)


def linear(x: Tensor, weight: Tensor,
           bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` through the path
    :func:`linear_path` chooses."""
    if linear_path(x, weight, bias) == 'onednn':
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether forward (pre-)hooks watch ``module`` itself."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def linear_module(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)``; for an ``nn.Linear`` that no forward hook watches,
    its product through oneDNN where :func:`linear_path` takes it (else
    the module's own call: hooks and stock numerics)."""
    if (isinstance(module, nn.Linear) and not has_forward_hooks(module)
            and linear_path(x, module.weight, module.bias) == 'onednn'):
        return onednn_linear(x, module.weight, module.bias)
    return module(x)


def chain_with_linear(modules: nn.Module, x: Tensor) -> Tensor:
    """``modules(x)`` with each ``nn.Linear`` in it through
    :func:`linear_module`, ``nn.Sequential`` ones (of torch's forward)
    unrolled; the caller checks that no hook watches those."""
    if (isinstance(modules, nn.Sequential)
            and type(modules).forward is nn.Sequential.forward):
        for module in modules:
            x = chain_with_linear(module, x)
        return x
    return linear_module(modules, x)
