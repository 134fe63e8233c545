#!/usr/bin/env bash
# The GPU proof of alae_fast, sized for ONE device call: environment and ceilings, the Triton and
# CUDA tests, compute-sanitizer, then the model and op benchmarks, most valuable first.
#
#   ALAE_FAST_COMMIT=<sha> OUT=$OUT bash tools/gpu_verify.sh
#
# Environment:
#   OUT               results (default /tmp/gpu_verify): env.json, bench_model.json, bench_ops.json,
#                     log.txt (every step's whole output) and summary.md: at most 5 files
#   DEADLINE          seconds for the whole run (default 480); a step gets the smaller of its cap and
#                     what is left, and one that would start past DEADLINE is skipped with a line saying so
#   STEPS             comma list of the steps below to run (default all), e.g. env,build,op_bench
#   GPU_VERIFY_DRY=1  print each step's commands and limit instead of running them
#   ALAE_FAST_COMMIT  the commit measured, recorded in the JSON (the device's copy of the tree has no .git)
# Exit status: that of the first failing step in step order (124: it ran out of time; 3: no CUDA
# device); 0 when every step that ran passed. A step exiting 77 is reported as skipped (a missing tool).
#
# Steps, with caps and the expected time on one H200 with 16 cores, estimated from counts:
#   env           cap  60 s, ~15 s: torch import and CUDA init ~8 s; a 512 MiB device copy x ~25 and a
#                 bf16 8192^3 matmul x ~25 (1.1 TFLOP each, ~1.4 ms at ~790 TFLOP/s) take well under 1 s.
#   triton_tests  cap 300 s, ~120 s, in the background while `build` runs (it needs no build): the 101
#                 `gpu` tests of test_triton.py and test_ops.py's triton-cuda cases, with one fixed launch
#                 config per shape (ALAE_FAST_TRITON_AUTOTUNE=0): ~350 kernel compiles of ~1 s on 8
#                 pytest-xdist workers when xdist is installed; then launch_every_kernel.py on triton
#                 (fp32, bf16: ~100 more compiles) warms the Triton cache for the sanitizer.
#   build         cap 300 s, ~90 s: 4 .cu and 6 .cpp units for sm_90 alone (TORCH_CUDA_ARCH_LIST=9.0,
#                 MAX_JOBS=16), the slowest .cu ~60 s; ptxas -v (registers, spills) lands in log.txt.
#   cuda_tests    cap 240 s, ~60 s: 261 tests, test_cuda.py and test_ops.py's cuda cases (parity, layouts,
#                 megapixel, row buckets, gradcheck and gradgradcheck), mostly milliseconds each, 8 workers.
#   sanitizer     cap 180 s, ~90 s: memcheck over ~190 CUDA fwd+bwd launches (4 dtypes, 11 shapes, one
#                 misaligned) and ~90 Triton ones (fp32, bf16), racecheck over 18 small CUDA launches;
#                 each run starts python and torch under the tool (~15 s). Skipped without compute-sanitizer.
#   model_bench   cap 300 s, ~150 s + ~150 s per compile case: celeba-hq256 lod 6 and ffhq lod 8, variants
#                 fp32 eager, bf16 eager, bf16 fused cuda, bf16 fused triton (10-50 timed iterations of
#                 0.05-1 s each; Triton's first iteration compiles ~60 fixed-config kernels, ~60 s), then
#                 bf16 torch.compile (F/G/E/D compiled, minutes each) last.
#   op_bench      cap: what is left, ~60 s + ~300 s + ~8 s per compile case: every op at the ffhq and
#                 celeba-hq256 shapes of lods 5-8 (4 shapes per op), bf16 and fp32, fwd and fwd+bwd. An
#                 untimed pass on 16 workers compiles the ~600 Triton autotune candidates (~100 tunings of
#                 4-9 configs); then 288 eager, cuda and triton cases of ~0.6 s (parity, >= 50 timed
#                 calls) plus ~1 s per Triton tuning, then the 96 compile cases.
# The sum is far above DEADLINE: a default run covers env to model_bench and cuts the rest (cases past
# --bench-time-limit are skipped and the JSON keeps what ran); a second call such as
#   STEPS=env,build,op_bench DEADLINE=480 bash tools/gpu_verify.sh
# measures the ops. Render with: python -m benchmarks.report $OUT/env.json $OUT/bench_*.json --readme README.md
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_STEPS=(env triton_tests build cuda_tests sanitizer model_bench op_bench)
declare -A CAP=([env]=60 [triton_tests]=300 [build]=300 [cuda_tests]=240 [sanitizer]=180 [model_bench]=300
                [op_bench]=100000)
declare -A EXPECTED=([env]=15 [triton_tests]=120 [build]=90 [cuda_tests]=60 [sanitizer]=90 [model_bench]=450
                     [op_bench]=1130)
declare -A RC=() STATE=() TOOK=() NOTE=() STARTED=() LIMITS=()

export OUT=${OUT:-/tmp/gpu_verify}
DEADLINE=${DEADLINE:-480}
STEPS=${STEPS:-$(IFS=,; echo "${ALL_STEPS[*]}")}
DRY=${GPU_VERIFY_DRY:-0}
for name in ${STEPS//,/ }; do
  [[ -n ${CAP[$name]:-} ]] || { echo "gpu_verify: STEPS has an unknown step '$name'; steps: ${ALL_STEPS[*]}"; exit 2; }
done
[[ $DEADLINE =~ ^[0-9]+$ ]] || { echo "gpu_verify: DEADLINE must be whole seconds, got '$DEADLINE'"; exit 2; }

export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 ALAE_FAST_BUILD_CUDA=1 ALAE_FAST_PTXAS_VERBOSE=1
export ALAE_FAST_COMMIT=${ALAE_FAST_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/gpu_verify_triton_cache}
mkdir -p "$OUT"
LOG=$OUT/log.txt
: > "$LOG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { echo "$*" | tee -a "$LOG"; }
selected() { [[ ",$STEPS," == *",$1,"* ]]; }

write_summary() {
  {
    echo "# gpu_verify: commit ${ALAE_FAST_COMMIT}, DEADLINE ${DEADLINE} s, ${SECONDS} s elapsed"
    echo
    echo "| step | result | exit | seconds | expected s | last line of output |"
    echo "|---|---|---:|---:|---:|---|"
    for name in "${ALL_STEPS[@]}"; do
      [[ -n ${STATE[$name]:-} ]] || continue
      echo "| $name | ${STATE[$name]} | ${RC[$name]:-} | ${TOOK[$name]:-} | ${EXPECTED[$name]} | ${NOTE[$name]:-} |"
    done
  } > "$OUT/summary.md"
}

# skip NAME WHY: the step does not run.
skip() {
  STATE[$1]="skipped: $2"
  say "=== $1: skipped, $2"
  write_summary
}

# begin NAME [NEEDS...]: 0 if the step is to run now, with LIMIT set; else records why not.
begin() {
  local name=$1 dep
  shift
  selected "$name" || return 1
  if [[ $DRY != 1 && ${RC[env]:-} == 3 && $name != env ]]; then skip "$name" "no CUDA device (see env)"; return 1; fi
  for dep in "$@"; do
    if [[ -n ${RC[$dep]:-} && ${RC[$dep]} != 0 ]]; then skip "$name" "$dep failed"; return 1; fi
  done
  local left=$((DEADLINE - SECONDS))
  if ((left <= 0)); then skip "$name" "past the deadline (${DEADLINE} s)"; return 1; fi
  export LIMIT=$((CAP[$name] < left ? CAP[$name] : left))
  STARTED[$name]=$SECONDS
  LIMITS[$name]=$LIMIT
  say "=== $name: started at ${SECONDS} s, limit ${LIMIT} s"
  return 0
}

# launch NAME: runs step_NAME under its limit, output to $WORK/NAME.out (in the background: see finish).
launch() {
  if [[ $DRY == 1 ]]; then
    { echo "dry run: would run, within ${LIMIT} s:"; declare -f "step_$1" | sed '1,2d;$d'; } > "$WORK/$1.out"
    return 0
  fi
  timeout --kill-after=10 "$LIMIT" bash -c "step_$1" > "$WORK/$1.out" 2>&1
}

# finish NAME RC: appends the step's output to the log, shows its end, records the result.
finish() {
  local name=$1 rc=$2
  cat "$WORK/$name.out" >> "$LOG"
  tail -n 15 "$WORK/$name.out"
  RC[$name]=$rc
  TOOK[$name]=$((SECONDS - STARTED[$name]))
  NOTE[$name]=$(grep -v '^\s*$' "$WORK/$name.out" | tail -n 1 | cut -c1-160 | tr '|' '/')
  case $rc in
    0) STATE[$name]=$([[ $DRY == 1 ]] && echo "dry run" || echo ok) ;;
    77) STATE[$name]="skipped (see log)"; RC[$name]=0 ;;
    124 | 137) STATE[$name]="TIMED OUT after ${LIMITS[$name]} s" ;;
    *) STATE[$name]=FAILED ;;
  esac
  say "=== $name: ${STATE[$name]} (exit $rc, ${TOOK[$name]} s)"
  write_summary
}

run() {
  begin "$@" || return 0
  launch "$1"
  finish "$1" $?
}

# pytest-xdist workers when it is installed (it is optional).
xdist() { python3 -c "import xdist" 2>/dev/null && echo "-n $1"; }

step_env() {
  nvidia-smi || echo "nvidia-smi is not available"
  python3 tools/gpu_env.py "$OUT/env.json"
}

step_triton_tests() {
  local rc=0 launch_rc=0
  python3 -m pytest -q -rfE -p no:cacheprovider -m gpu -k triton tests/test_triton.py tests/test_ops.py \
    $(xdist 8) || rc=$?
  python3 tools/launch_every_kernel.py --backends triton --dtypes fp32,bf16 || launch_rc=$?
  return $((rc ? rc : launch_rc))
}

step_build() {
  # An old _C moves aside (a new inode): the background tests that loaded it are not hit by an in-place
  # rewrite, and it comes back if the build fails.
  local old
  for old in alae_fast/_C*.so; do [[ -e $old ]] && mv "$old" "$WORK/"; done
  if ! python3 -m pip install --no-build-isolation --no-deps --no-index -v -e .; then
    echo "pip install -e . failed; building in place instead"
    if ! python3 setup.py build_ext --inplace; then
      for old in "$WORK"/_C*.so; do [[ -e $old ]] && mv "$old" alae_fast/; done
      return 1
    fi
    local fallback="WARNING: pip install -e . failed; alae_fast._C was built by setup.py build_ext --inplace"
  fi
  python3 -m alae_fast.info &&
    python3 -c "from alae_fast.ops import _backend; assert _backend.EXT_HAS_CUDA, 'alae_fast._C has no CUDA kernels'" ||
    return 1
  echo "${fallback:-alae_fast._C built with CUDA kernels for sm_90}"
}

step_cuda_tests() {
  python3 -m pytest -q -rfE -p no:cacheprovider -m gpu -k "not triton" tests/test_cuda.py tests/test_ops.py $(xdist 8)
}

step_sanitizer() {
  if ! command -v compute-sanitizer > /dev/null; then
    echo "compute-sanitizer is not on PATH"
    return 77
  fi
  local sweep tool args rc
  for sweep in "memcheck --backends cuda" "memcheck --backends triton --dtypes fp32,bf16" \
               "racecheck --backends cuda --small --dtypes fp32"; do
    read -r tool args <<< "$sweep"
    echo "--- compute-sanitizer --tool $tool: launch_every_kernel.py $args"
    compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
      python3 tools/launch_every_kernel.py $args 2>&1 | tee "$WORK/sanitizer.txt"
    rc=${PIPESTATUS[0]}
    if ((rc)) && grep -q "Device not supported" "$WORK/sanitizer.txt"; then
      echo "compute-sanitizer does not support this device (seen on gVisor machines)"
      return 77
    fi
    ((rc == 0)) || return $rc
  done
  echo "compute-sanitizer: memcheck and racecheck found no errors"
}

# Benchmarks stop starting cases 30 s before the step's limit, so pytest still writes its JSON. The model
# runs Triton with fixed launch configs: autotuning every layer shape would compile ~600 variants serially.
step_model_bench() {
  ALAE_FAST_TRITON_AUTOTUNE=0 python3 -m pytest -q -rfE -p no:cacheprovider benchmarks/test_model_bench.py \
    -k "test_train_iteration and (celeba-hq256-lod6 or ffhq-lod8)" --benchmark-json "$OUT/bench_model.json" \
    --bench-time-limit $((LIMIT - 30)) --bench-case-timeout 240
}

# The ops keep autotuning: an untimed pass on 16 xdist workers (when installed) first compiles every
# Triton candidate into the shared cache, so the timed pass only benchmarks them.
step_op_bench() {
  local grid=(benchmarks/test_ops_bench.py -k test_op -m "not smoke" --bench-configs ffhq,celeba-hq256
              --bench-lods 5,6,7,8 --bench-dtypes bf16,fp32) env_json=()
  [[ -s $OUT/env.json ]] && grep -q '"copy_GBps"' "$OUT/env.json" && env_json=(--bench-env "$OUT/env.json")
  if [[ -n $(xdist 16) ]]; then
    echo "--- compiling the Triton autotune candidates (untimed)"
    timeout $((LIMIT / 4)) python3 -m pytest -q -p no:cacheprovider "${grid[@]}" --bench-backends triton \
      --benchmark-disable $(xdist 16) | tail -n 3
  fi
  python3 -m pytest -q -rfE -p no:cacheprovider "${grid[@]}" --bench-backends ref,compile,cuda,triton \
    "${env_json[@]}" --benchmark-json "$OUT/bench_ops.json" --bench-time-limit $((LIMIT - SECONDS - 30)) \
    --bench-case-timeout 120
}
export WORK
export -f xdist step_env step_triton_tests step_build step_cuda_tests step_sanitizer step_model_bench step_op_bench

say "gpu_verify: commit ${ALAE_FAST_COMMIT}, steps ${STEPS}, DEADLINE ${DEADLINE} s, results in ${OUT}"
run env
triton_pid=""
if begin triton_tests; then
  launch triton_tests &
  triton_pid=$!
fi
run build
run cuda_tests build
if [[ -n $triton_pid ]]; then
  wait "$triton_pid"
  finish triton_tests $?
fi
run sanitizer build
run model_bench
run op_bench

# pytest-benchmark leaves an empty file when no case ran.
find "$OUT" -maxdepth 1 -name 'bench_*.json' -empty -delete
status=0
for name in "${ALL_STEPS[@]}"; do
  if [[ -n ${RC[$name]:-} && ${RC[$name]} != 0 ]]; then
    status=${RC[$name]}
    break
  fi
done
write_summary
echo "gpu_verify: exit ${status}" >> "$OUT/summary.md"
cat "$OUT/summary.md"
exit "$status"
