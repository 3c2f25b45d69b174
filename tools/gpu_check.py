"""The GPU check: versions, the CUDA tests, ViT-B timed on the GPU.

    python tools/gpu_check.py [--device cuda] [--batch-size 16]
        [--dtype fp16] [--repeats 3] [--parts PART ...] [--tiny]
        [--budget 280]

In under 5 minutes on one GPU (../shared/device/gpu_check.sh runs it), each
part printed as it ends:

1. versions: torch, CUDA, cuDNN, the device, mmengine, mmaction, and the
   packed attention kernel 'auto' runs before any measurement;
2. the CUDA tests (tests/test_backbone_cuda.py), time-boxed;
3. ViT-B 16x224 at batch 16 in fp16: stock, dense, NEPAM, NEPAM half and
   ToMe side by side (tools/benchmark.py's table);
4. NEPAM's threshold, packed, padded and clip by clip beside dense, with
   one call of each packed attention kernel at the batch's lengths (on a
   GPU that measurement chooses the kernel: tools/benchmark.py --batching);
5. the host reads and (on CUDA) the synchronising calls of one forward pass
   of the threshold model (NEPAM's threshold, then ToMe's, packed) with
   each packed attention kernel, against the bound of one after NEPAM and
   one a block.

A part that would start with less than a minute of ``--budget`` left is
skipped, and says so; ``--parts`` runs some only (the CUDA tests need
CUDA). ``--tiny`` runs the demo's tiny model instead of ViT-B (a dry run
anywhere: tests/test_tools.py runs it on CPU).
"""
import argparse
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from mmengine.config import Config

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred.arguments import integer
from mmtokred.benchmark.compare import compare, format_table
from mmtokred.benchmark.threshold import (clips_of_graded_redundancy,
                                          compare_batching, format_batching,
                                          threshold_for_tokens)
from mmtokred.measure.forward import DTYPES, check_device, device_name
from mmtokred.measure.host_reads import CudaSyncs, HostReads
from mmtokred.ops.packed_attention import (PACKED_KERNELS, kernel_refusal,
                                           packed_kernel_reason,
                                           packed_kernel_set_to)
from mmtokred.table import Column, Row, format_table as table

ROOT = Path(__file__).resolve().parents[1]
#: The configs of part 3, side by side (the first is timed with --batching).
VIT_B = ['configs/videomae_nepam.py', 'configs/videomae_nepam_half.py',
         'configs/videomae_tome.py']
TINY = ['configs/demo/videomae_tiny_nepam.py']
#: The parts, in the order they run (the CUDA tests only on CUDA).
PARTS = ('versions', 'tests', 'side_by_side', 'batching', 'waits')
#: The columns of part 5, one row per packed kernel.
WAITS_COLUMNS = (
    Column('kernel', lambda row: row['kernel'], 'left'),
    Column('host reads', lambda row: row['reads']),
    Column('CUDA syncs', lambda row: row['syncs']),
    Column('', lambda row: row['note'], 'left'),
)
#: Seconds a part needs at least to start.
PART_MINIMUM = 60


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda',
                        help='cuda, cuda:1 (cpu for a dry run)')
    parser.add_argument('--batch-size', type=integer(2), default=16,
                        help='clips per forward pass, >= 2 (default 16)')
    parser.add_argument('--dtype', default='fp16', choices=tuple(DTYPES),
                        help='weights and clips (default fp16)')
    parser.add_argument('--repeats', type=integer(1), default=3,
                        help='timed passes per model, >= 1')
    parser.add_argument('--parts', nargs='+', choices=PARTS, default=PARTS,
                        help='the parts to run (default: all)')
    parser.add_argument('--tiny', action='store_true',
                        help="the demo's tiny model instead of ViT-B")
    parser.add_argument('--budget', type=integer(1), default=280,
                        help='seconds for all parts (default 280)')
    args = parser.parse_args()
    try:
        args.device = check_device(args.device, '--device')
    except ValueError as exc:
        parser.error(str(exc))
    return args


def versions(device: torch.device, dtype: torch.dtype) -> str:
    import mmaction
    import mmengine
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() \
        else None
    return '\n'.join([
        f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN '
        f'{cudnn}, mmengine {mmengine.__version__}, mmaction '
        f'{mmaction.__version__}, python {sys.version.split()[0]}',
        f'device: {device_name(device)}',
        f'packed attention in {dtype} before any measurement: '
        f'{packed_kernel_reason(device, dtype)}',
    ])


def cuda_tests(seconds: int) -> str:
    command = [sys.executable, '-m', 'pytest', '-q', '-rfEs',
               '-p', 'no:cacheprovider', 'tests/test_backbone_cuda.py']
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True,
                              text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return f'the CUDA tests ran past {seconds} s and were stopped'
    lines = (done.stdout + done.stderr).strip().splitlines()
    failures = [line for line in lines if line.startswith(('FAILED',
                                                           'ERROR'))]
    return '\n'.join([*failures[:30], lines[-1] if lines else '',
                      f'pytest exit code {done.returncode}'])


def side_by_side(configs: List[str], args: argparse.Namespace) -> str:
    result = compare([str(ROOT / c) for c in configs], device=args.device,
                     batch_size=args.batch_size, dtype=args.dtype,
                     repeats=args.repeats)
    return format_table(result)


def batching(config: str, args: argparse.Namespace) -> str:
    result = compare_batching(str(ROOT / config), mean_tokens=0.5,
                              batch_size=args.batch_size,
                              repeats=args.repeats, device=str(args.device),
                              dtype=args.dtype)
    return format_batching(result)


def waits_per_forward(config: str, args: argparse.Namespace) -> str:
    """Part 5: host reads and CUDA syncs of one threshold forward pass."""
    from mmaction.registry import MODELS
    backbone = Config.fromfile(str(ROOT / config)).model.backbone
    size, patch = backbone.get('img_size', 224), backbone.patch_size
    tubelet = (backbone.get('tubelet_size', 2), patch, patch)
    clips = clips_of_graded_redundancy(
        args.batch_size, (backbone.get('num_frames', 16), size, size))
    nepam = dict(backbone.token_reduction.input, ratio=None, num_windows=None)
    nepam['threshold'] = threshold_for_tokens(clips, nepam, tubelet, 0.5)
    tokens = clips[0, 0].numel() // (tubelet[0] * patch * patch)
    tome = dict(type='ToMe', r=min(16, tokens // (2 * backbone.depth)),
                threshold=0.8)
    dtype = DTYPES[args.dtype]
    model = MODELS.build(dict(backbone, token_reduction=dict(
        input=nepam, blocks=tome, proportional_attention=True))
    ).eval().to(args.device, dtype)
    clips = clips.to(args.device, dtype)
    bound = 1 + len(model.blocks)
    rows: List[Row] = []
    for kernel in PACKED_KERNELS[1:]:
        probe = torch.zeros(1, 1, 1, 8, device=args.device, dtype=dtype)
        refusal = kernel_refusal(kernel, probe, 0.)
        if refusal:
            rows.append(dict(kernel=kernel, reads='-', syncs='-',
                             note=f'does not run: {refusal}'))
            continue
        with torch.inference_mode(), packed_kernel_set_to(kernel):
            model(clips)  # compiles flex, loads the kernels
            reads = syncs = '-'
            if kernel != 'flex':  # compiled code runs eager when counted
                with HostReads() as counted:
                    model(clips)
                reads = str(counted.count)
            if args.device.type == 'cuda':
                with CudaSyncs() as counted:
                    model(clips)
                syncs = str(counted.count)
        rows.append(dict(kernel=kernel, reads=reads, syncs=syncs, note=''))
    return table(WAITS_COLUMNS, rows, title=(
        f'NEPAM threshold then ToMe r={tome["r"]} threshold 0.8, packed, '
        f'{len(model.blocks)} blocks, {args.batch_size} clips: at most '
        f'{bound} waits a forward pass'))


def main() -> None:
    args = parse_args()
    start = time.monotonic()
    configs = TINY if args.tiny else VIT_B
    parts: Dict[str, Tuple[str, Callable[[], str]]] = {
        'versions': ('versions', lambda: versions(args.device,
                                                  DTYPES[args.dtype])),
        'tests': ('CUDA tests', lambda: cuda_tests(max(
            int(args.budget - (time.monotonic() - start)) // 2, 1))),
        'side_by_side': (
            f'{args.dtype}, batch {args.batch_size}, side by side with stock',
            lambda: side_by_side(configs, args)),
        'batching': ('threshold batches: packed, padded, clip by clip',
                     lambda: batching(configs[0], args)),
        'waits': ('host waits a forward pass',
                  lambda: waits_per_forward(configs[0], args)),
    }
    chosen = [parts[part] for part in PARTS if part in args.parts
              and (part != 'tests' or args.device.type == 'cuda')]
    failed = 0
    for number, (name, part) in enumerate(chosen, 1):
        left = args.budget - (time.monotonic() - start)
        print(f'== {number}. {name}', flush=True)
        if number > 1 and left < PART_MINIMUM:
            print(f'skipped: {left:.0f} s of --budget {args.budget} left')
            continue
        began = time.monotonic()
        try:
            print(part())
        except Exception:  # noqa: BLE001  (report it, go on to the next)
            failed += 1
            print(traceback.format_exc().rstrip())
        print(f'({time.monotonic() - began:.0f} s)', flush=True)
    print(f'gpu_check: {failed} part(s) failed, '
          f'{time.monotonic() - start:.0f} s')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
