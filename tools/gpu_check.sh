#!/usr/bin/env bash
# Installs a wheelhouse (`make wheelhouse`) on a GPU node without network and checks the node with it:
#   tools/gpu_check.sh WHEELHOUSE [OUT] [--device cpu] [--tests TEST...]
#   WHEELHOUSE/gpu_check.sh WHEELHOUSE [OUT]          # the same script travels inside the wheelhouse
# PYTHON names the node's interpreter, the one that has its torch (default: python3). Everything goes to OUT
# (default ./gpu_check): the private install (OUT/site; the node's site-packages are left alone), the logs and
# the report (OUT/report.md, OUT/report.json). `--device cpu`: the CPU stand-ins, also where a GPU is present.
# Exit status: 0 passed, 1 failed, 2 refused (the node's torch does not match the wheelhouse; the reduced set
# ran), 3 nothing could run. What it checks: tools/env/gpu_check.py; docs/gpu.md, "Offline nodes".
set -euo pipefail
usage="usage: $0 WHEELHOUSE [OUT] [--device cpu] [--tests TEST...]"
if [ $# -lt 1 ]; then
    echo "$usage" >&2
    exit 3
fi
if [ ! -f "$1/manifest.json" ] || [ ! -f "$1/maformer_mm-checks.tar.gz" ]; then
    echo "$0: '$1' is no wheelhouse: it lacks manifest.json or maformer_mm-checks.tar.gz (make wheelhouse builds one)" >&2
    exit 3
fi
WHEELHOUSE=$(cd "$1" && pwd)
shift
OUT=gpu_check
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    OUT=$1
    shift
fi
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
    echo "$0: no interpreter '$PY': set PYTHON to the python that has the node's torch" >&2
    exit 3
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/suite" "$OUT/logs"
mkdir -p "$OUT/suite"
tar -xzf "$WHEELHOUSE/maformer_mm-checks.tar.gz" -C "$OUT/suite"
cd "$OUT/suite"
exec env -u PYTHONPATH "$PY" -m tools.env.gpu_check "$WHEELHOUSE" "$OUT" "$@"
