#!/usr/bin/env bash
# The one command a session with a GPU runs (through the device tool) to verify the CUDA backend:
# build the extension with CUDA, report the backends, run every GPU test, then the op benchmarks.
# Logs and results land in ${OUT:-/tmp/out}; the exit status is that of the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
status=0
step() {  # step NAME CMD...: runs CMD, tees its output to $OUT/NAME.log, remembers a failure
  local name=$1
  shift
  echo "=== $name: $*" | tee -a "$OUT/summary.log"
  if "$@" 2>&1 | tee "$OUT/$name.log"; then
    echo "=== $name: ok" | tee -a "$OUT/summary.log"
  else
    local rc=$?
    echo "=== $name: FAILED (exit $rc)" | tee -a "$OUT/summary.log"
    [ "$status" -ne 0 ] || status=$rc
  fi
}
set -o pipefail
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
step build env ALAE_FAST_BUILD_CUDA=1 MAX_JOBS="${MAX_JOBS:-16}" pip install --no-build-isolation --no-deps -e .
if [ "$status" -ne 0 ]; then exit "$status"; fi
step info python -m alae_fast.info
step tests_gpu python -m pytest -q -m gpu tests --junitxml="$OUT/tests_gpu.xml"
step bench python -m pytest benchmarks -q
exit "$status"
