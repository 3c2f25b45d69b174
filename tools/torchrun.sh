#!/usr/bin/env bash
# torchrun with MMAction2's multi-node variables, shared by dist_test.sh and
# dist_train.sh:  bash tools/torchrun.sh PROCS SCRIPT [script args]
# Set NNODES, NODE_RANK, MASTER_ADDR and PORT for several nodes.
# With fewer visible GPUs than PROCS, mmengine would give process i the GPU i
# that does not exist ("invalid device ordinal"): the processes then run on
# the CPU over gloo, said in one line.
set -euo pipefail
PROCS=$1
shift
TOOLS=$(dirname "$0")
if [ "${CUDA_VISIBLE_DEVICES-unset}" != "" ]; then
    GPUS=$(python -c 'import torch; print(torch.cuda.device_count())' \
        2>/dev/null || echo 0)
    if [ "$GPUS" -gt 0 ] && [ "$GPUS" -lt "$PROCS" ]; then
        echo "$0: $PROCS processes but $GPUS GPU(s) visible: running them" \
            "on the CPU over gloo (use at most $GPUS processes for the" \
            "GPUs)" >&2
        export CUDA_VISIBLE_DEVICES=""
    fi
fi
# With several processes, torchrun (OMP_NUM_THREADS) and mmengine's
# set_multi_processing (OMP_ and MKL_NUM_THREADS) set one thread each where
# unset, and say so in a banner and two warnings per process: set those same
# values here and say it once.
if [ "$PROCS" -gt 1 ] && { [ -z "${OMP_NUM_THREADS+set}" ] ||
        [ -z "${MKL_NUM_THREADS+set}" ]; }; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS-1}
    export MKL_NUM_THREADS=${MKL_NUM_THREADS-1}
    echo "$0: OMP_NUM_THREADS=$OMP_NUM_THREADS" \
        "MKL_NUM_THREADS=$MKL_NUM_THREADS in each of the $PROCS processes" \
        "(set them to tune)" >&2
fi
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$PROCS" \
    "$@"
