#!/usr/bin/env bash
# torchrun with MMAction2's multi-node variables, shared by dist_test.sh and
# dist_train.sh:  bash tools/torchrun.sh PROCS SCRIPT [script args]
# Set NNODES, NODE_RANK, MASTER_ADDR and PORT for several nodes.
set -euo pipefail
PROCS=$1
shift
TOOLS=$(dirname "$0")
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$PROCS" \
    "$@"
