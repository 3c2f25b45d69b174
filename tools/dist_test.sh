#!/usr/bin/env bash
# Multi-process testing with torchrun:
#   bash tools/dist_test.sh CONFIG [CHECKPOINT] GPUS [tools/test.py args]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT as for MMAction2.
# Without CUDA the processes run on the CPU over gloo.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG [CHECKPOINT] GPUS [args of tools/test.py]" >&2
    exit 2
fi
CONFIG=$1
shift
CHECKPOINT=()
if ! [[ $1 =~ ^[0-9]+$ ]]; then
    CHECKPOINT=("$1")
    shift
fi
if [ $# -lt 1 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: GPUS (the number of processes per node) must be a positive" \
        "integer after CONFIG [CHECKPOINT]" >&2
    exit 2
fi
GPUS=$1
shift
TOOLS=$(dirname "$0")
exec bash "$TOOLS/torchrun.sh" "$GPUS" "$TOOLS/test.py" "$CONFIG" \
    "${CHECKPOINT[@]}" --launcher pytorch "$@"
