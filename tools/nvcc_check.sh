#!/usr/bin/env bash
# Compile-only check of every csrc/**/*.cu against the installed torch's headers, for sm_80 and
# sm_90, so CUDA code cannot rot on CPU-only machines. Linking needs a CUDA torch (GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda-13.0/bin/nvcc)}
mapfile -t files < <(find csrc -name '*.cu' | sort)
[ ${#files[@]} -gt 0 ] || { echo "nvcc_check: no .cu files under csrc/"; exit 1; }
read -r -a includes < <(python3 -c "
import sysconfig
from torch.utils.cpp_extension import include_paths
print(' '.join('-I' + p for p in include_paths() + [sysconfig.get_paths()['include']]))")
flags=(-c -std=c++20 --expt-relaxed-constexpr -O1 -DALAE_FAST_WITH_CUDA -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_EXTENSION_NAME=_C -D_GLIBCXX_USE_CXX11_ABI=1
       -Xptxas=--warn-on-spills -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -Icsrc "${includes[@]}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
for f in "${files[@]}"; do
  ( "$NVCC" "${flags[@]}" "$f" -o "$out/$(basename "$f").o" 2>&1 | sed "s|^|[$f] |" ; exit "${PIPESTATUS[0]}" ) &
  pids+=($!)
  # two at a time on a 2-core machine
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
echo "nvcc_check: compiled ${#files[@]} file(s) for sm_80 and sm_90"
