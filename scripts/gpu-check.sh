#!/usr/bin/env bash
# The GPU check, in one go from the repo root of a machine with nvcc, cmake, ninja, PyTorch and
# compute-sanitizer (Node only when a node binary was carried in .device/node.xz):
#   build           build with CUDA in build-gpu/ (plain cmake; RLHF_CUDA_ARCHS defaults to 90),
#   cpu-tests       the CPU conformance (every SIMD variant this CPU has) and the matmul tests,
#   cuda-tests      the CUDA conformance against the scalar reference, every family,
#   cuda-bench      rlhf_cuda_bench as JSON (both advantage algorithms; log-probs, the fused
#                   actor loss with the device memory it allocated, PPO and value losses, ...),
#                   and, with RLHF_BASELINE=DIR, the rlhf_cuda_bench in DIR right after it, so
#                   that a change's before and after come from the same card in the same call
#                   (bench-compare.log sets them side by side),
#   torch           the PyTorch side by side (the same ops, with their float64 differences),
#   policy-summary  the lines of both that a reviewer of the policy kernels reads first,
#   tap             the addon from Node: unpack node, build the addon through cmake-js, tsc,
#                   then tap (TAP_FILES, default the whole suite),
#   memcheck        compute-sanitizer memcheck on rlhf_cuda_tests --quick,
#   racecheck       compute-sanitizer racecheck on the same, a family at a time (the advantage
#                   family, the slowest under racecheck, last), so that a short limit still
#                   covers the others,
#   big             the cases past 2^31 and 2^32 rows (about 64 GiB of device memory).
# STEPS picks the steps and their order (default: all of the above, in that order). Each step
# logs to ${OUT:-./gpu-results}/<step>.log and is stopped after its limit, STEP_LIMIT_<step> (dashes
# as underscores) or else STEP_LIMIT seconds; the script goes on past a failing step, prints a
# summary, and exits non-zero when any step failed.
#
# RLHF_PREBUILT=DIR runs what was built elsewhere (for this GPU's architecture) instead of
# building: DIR holds rlhf_native_tests, rlhf_matmul_tests, rlhf_cuda_tests, rlhf_cuda_bench,
# rlhf.node and rlhf-build.json. With it, a lease spends its minutes on the checks, not on the
# compiler; node_modules may come as .device/node_modules.tar.xz and dist/ is compiled here.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RLHF_CUDA_ARCHS=${RLHF_CUDA_ARCHS:-90}
STEPS=${STEPS:-"build cpu-tests cuda-tests cuda-bench torch policy-summary tap memcheck racecheck big"}
STEP_LIMIT=${STEP_LIMIT:-900}
PREBUILT=${RLHF_PREBUILT:-}
if [ -n "$PREBUILT" ]; then
  BIN=$(cd "$PREBUILT" && pwd)
else
  BIN=$PWD/build-gpu
fi

# nvcc and compute-sanitizer are often installed but not on PATH.
for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
  if [ -d "$dir" ] && ! command -v nvcc > /dev/null 2>&1; then export PATH="$PATH:$dir"; fi
done

summary=()
failed=0

# step NAME COMMAND...: runs COMMAND, within its limit, with its output in $OUT/NAME.log and
# records the outcome.
step() {
  local name=$1 start=$SECONDS status limit_var limit
  shift
  limit_var="STEP_LIMIT_${name//-/_}"
  limit=${!limit_var:-$STEP_LIMIT}
  echo "== $name (limit ${limit}s)"
  timeout "$limit" bash -c '"$@"' "$name" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    status=ok
  elif [ $rc -eq 124 ]; then
    status="STOPPED at ${limit}s"
    failed=1
  else
    status="FAILED (exit $rc)"
    failed=1
  fi
  summary+=("$(printf '%-16s %-18s %5ss' "$name" "$status" $((SECONDS - start)))")
  tail -n 8 "$OUT/$name.log"
}

skip() {
  summary+=("$(printf '%-16s skipped: %s' "$1" "$2")")
  echo "== $1 skipped: $2"
}

build() {
  cmake -S . -B build-gpu -G Ninja -DRLHF_CUDA=ON -DCMAKE_BUILD_TYPE=Release &&
    cmake --build build-gpu
}

cpu_tests() {
  "$BIN/rlhf_native_tests" && "$BIN/rlhf_matmul_tests"
}

sanitizer() {
  if ! command -v compute-sanitizer > /dev/null 2>&1; then
    echo "compute-sanitizer not found"
    return 1
  fi
  compute-sanitizer --tool "$1" --error-exitcode 1 "$BIN/rlhf_cuda_tests" --quick "${@:2}"
}

# On an H200, racecheck took more than 100 s for the advantage family alone.
racecheck_families() {
  local family status=0
  for family in runtime statistics policy preference nn limits advantages; do
    echo "== racecheck --only $family"
    sanitizer racecheck --only "$family" || status=1
  done
  return $status
}

torch_side_by_side() {
  if ! python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "PyTorch with CUDA is not importable"
    return 1
  fi
  PYTHONUNBUFFERED=1 python3 scripts/torch_side_by_side.py --json "$OUT/torch_side_by_side.json"
}

# The policy family at a glance: its conformance verdicts, its bench rows, the actor loss's extra
# device memory, and torch's numbers for the same ops.
policy_summary() {
  grep -hE '^(ok  |FAIL) (logprobs|firstInvalidLabel|klPenalty|shapeRewards|policyLoss|valueLoss|actorLoss|policy family)' \
    "$OUT/cuda-tests.log" | awk '{print $1}' | sort | uniq -c
  grep -hE '^FAIL (logprobs|klPenalty|shapeRewards|policyLoss|valueLoss|actorLoss)' "$OUT/cuda-tests.log"
  grep -hE '^(logprobs|actorLoss|ppo|valueLoss)' "$OUT/cuda-bench.log" "$OUT/torch.log" 2>/dev/null
  return 0
}

unpack_node() {
  mkdir -p build-gpu/node/bin
  if command -v xz > /dev/null 2>&1; then
    xz -dc .device/node.xz > build-gpu/node/bin/node
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      .device/node.xz build-gpu/node/bin/node
  fi
  chmod +x build-gpu/node/bin/node
  export PATH="$PWD/build-gpu/node/bin:$PATH"
  node --version
}

unpack_node_modules() {
  [ -d node_modules ] && return 0
  [ -f .device/node_modules.tar.xz ] || { echo "no node_modules and no .device/node_modules.tar.xz"; return 1; }
  tar -xJf .device/node_modules.tar.xz
}

addon() {
  if [ -n "$PREBUILT" ]; then
    mkdir -p build/Release && cp "$BIN/rlhf.node" build/Release/ && cp "$BIN/rlhf-build.json" build/
  else
    RLHF_CUDA=1 node scripts/build-native.js
  fi
}

# The addon from Node, every step of it within the tap step's limit.
tap_suite() {
  [ -f .device/node.xz ] || { echo "no node binary at .device/node.xz"; return 1; }
  unpack_node && unpack_node_modules && addon &&
    node node_modules/typescript/bin/tsc -p tsconfig.json &&
    node -e "const rl = require('./dist'); console.log(JSON.stringify(rl.backends()))" &&
    node node_modules/.bin/tap ${TAP_FILES:-}
}

# The bench, then with RLHF_BASELINE the older build's and the two side by side.
cuda_bench_steps() {
  step cuda-bench "$BIN/rlhf_cuda_bench" --json "$OUT/cuda_bench.json" --algorithms
  [ -n "${RLHF_BASELINE:-}" ] || return 0
  step baseline-bench "$RLHF_BASELINE/rlhf_cuda_bench" --json "$OUT/baseline_bench.json" --algorithms
  if [ -f "$OUT/baseline_bench.json" ] && [ -f "$OUT/cuda_bench.json" ]; then
    step bench-compare python3 scripts/bench-compare.py "$OUT/baseline_bench.json" "$OUT/cuda_bench.json"
  else
    skip bench-compare "a bench wrote no JSON"
  fi
}

# Steps run under timeout in a child bash, which needs the functions and settings.
export -f build cpu_tests sanitizer racecheck_families torch_side_by_side policy_summary unpack_node unpack_node_modules addon tap_suite
export OUT BIN PREBUILT

for name in $STEPS; do
  case $name in
    build)
      if [ -n "$PREBUILT" ]; then skip build "prebuilt in $PREBUILT"; else step build build; fi ;;
    cpu-tests) step cpu-tests cpu_tests ;;
    cuda-tests) step cuda-tests "$BIN/rlhf_cuda_tests" ;;
    cuda-bench) cuda_bench_steps ;;
    torch) step torch torch_side_by_side ;;
    policy-summary) step policy-summary policy_summary ;;
    tap) step tap tap_suite ;;
    memcheck) step memcheck sanitizer memcheck ;;
    racecheck) step racecheck racecheck_families ;;
    big) step big "$BIN/rlhf_cuda_tests" --only big ;;
    *) echo "unknown step '$name'"; failed=1 ;;
  esac
done

echo
echo "== summary (logs in $OUT)"
printf '%s\n' "${summary[@]}"
exit $failed
