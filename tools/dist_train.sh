#!/usr/bin/env bash
# Distributed training through torchrun and mmengine's `pytorch` launcher.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# Several nodes: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on each node. Without GPUs the
# processes train on CPU with gloo (one process per GPUS).
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The project's environment (`make env` builds it) unless PYTHON names an interpreter; without it, `python`.
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi

# exec: the launcher's PID is torchrun's, so that Ctrl-C or a scheduler's SIGTERM/SIGINT sent to it reaches
# torchrun, which passes it to every rank and waits for them (bash would wait for its child and pass nothing).
PYTHONPATH="$ROOT":${PYTHONPATH:-} \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
