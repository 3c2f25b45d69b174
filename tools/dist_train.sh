#!/usr/bin/env bash
# Multi-process training with torchrun:
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py args]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT as for MMAction2.
# Without CUDA the processes run on the CPU over gloo.
set -euo pipefail

if [ $# -lt 2 ] || ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 CONFIG GPUS [args of tools/train.py]" \
        "(GPUS: processes per node, a positive integer)" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
TOOLS=$(dirname "$0")
exec bash "$TOOLS/torchrun.sh" "$GPUS" "$TOOLS/train.py" "$CONFIG" \
    --launcher pytorch "$@"
