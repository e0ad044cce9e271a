#!/usr/bin/env bash
# The GPU paths of notebooks 01, 02, 06, 08 and 10 and of optkit.core.bench, on one NVIDIA GPU, in at
# most about 8 minutes. Uses the python3 that has a CUDA build of torch (not .venv: its torch is
# the CPU wheel). Prints what ran, what skipped and why, and the headline figures; exits 1 if a
# section failed. Usage: bash tools/gpu_check.sh [--out DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OPTKIT_STATIC=1
exec timeout 480 "$PY" tools/gpu_check.py "$@"
