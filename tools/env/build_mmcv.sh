#!/usr/bin/env bash
# Builds mmcv with its compiled ops into the environment of PYTHON, CPU-only or with CUDA kernels, then
# proves which build it made (tools/env/mmcv_build.py check). `make env` calls it:
#   tools/env/build_mmcv.sh PYTHON MMCV_PIN cpu
#   tools/env/build_mmcv.sh PYTHON MMCV_PIN cuda [TORCH_CUDA_ARCH_LIST]
# An empty arch list means the visible GPUs' compute capabilities, or DEFAULT_ARCHS without a GPU.
# mmcv 2.1.0 builds against torch 2.13 and CUDA 13 without a source patch.
set -euo pipefail
PY=$1
PIN=$2
MODE=$3
ARCHS=${4:-}
TOOL="$(dirname "$0")/mmcv_build.py"
VENV=$(dirname "$(dirname "$PY")")
# A forced build without a GPU to ask: A100 (8.0), RTX 30xx/A40 (8.6), RTX 40xx/L4/L40 (8.9) and H100
# (9.0), plus 9.0 PTX, which the driver compiles for newer cards (Blackwell). Each one adds an nvcc pass.
DEFAULT_ARCHS='8.0;8.6;8.9;9.0+PTX'

if [ "$MODE" = cuda ]; then
    ARCHS=${ARCHS:-$("$PY" "$TOOL" gpu-archs)}
    ARCHS=${ARCHS:-$DEFAULT_ARCHS}
fi
if "$PY" "$TOOL" check "$MODE" --archs "$ARCHS" >/dev/null 2>&1; then
    echo "mmcv is already the $MODE build asked for ${ARCHS:+($ARCHS)}"
    exit 0
fi
"$PY" -m pip uninstall -y mmcv 2>/dev/null || true
if [ "$MODE" = cuda ]; then
    CUDA_HOME=$("$PY" "$TOOL" toolkit "$VENV/cuda")
    # --no-cache-dir: pip's wheel cache is keyed on the sdist alone, so it would hand back an earlier
    # CPU-only build; and this CUDA wheel must never be offered to a later CPU-only build.
    env CUDA_HOME="$CUDA_HOME" PATH="$CUDA_HOME/bin:$PATH" FORCE_CUDA=1 MMCV_WITH_OPS=1 \
        TORCH_CUDA_ARCH_LIST="$ARCHS" "$PY" -m pip install --no-build-isolation --no-cache-dir "$PIN"
else
    # mmcv's setup.py compiles CUDA ops whenever torch sees a GPU: hide the GPUs from it.
    CUDA_VISIBLE_DEVICES='' FORCE_CUDA=0 MMCV_WITH_OPS=1 "$PY" -m pip install --no-build-isolation "$PIN"
    if ! "$PY" "$TOOL" check cpu >/dev/null 2>&1; then
        echo 'pip installed a CUDA build of mmcv from its cache: building a CPU-only one without the cache'
        "$PY" -m pip uninstall -y mmcv
        CUDA_VISIBLE_DEVICES='' FORCE_CUDA=0 MMCV_WITH_OPS=1 \
            "$PY" -m pip install --no-build-isolation --no-cache-dir "$PIN"
    fi
fi
"$PY" "$TOOL" check "$MODE" --archs "$ARCHS"
