#!/usr/bin/env bash
# The GPU check, in one go from the repo root of a machine with nvcc, cmake, ninja, PyTorch and
# compute-sanitizer (Node only when a node binary was carried in .device/node.xz):
#   1. build with CUDA in build-gpu/ (plain cmake; RLHF_CUDA_ARCHS defaults to 90),
#   2. ctest (CPU and CUDA conformance, the policy-gradient family included),
#   3. compute-sanitizer memcheck, then racecheck, on rlhf_cuda_tests --quick, and its cases
#      past 2^31 and 2^32 rows (--only big),
#   4. rlhf_cuda_bench (both advantage algorithms; log-probs, the fused actor loss with the
#      device memory it allocated, PPO and value losses) and the PyTorch side by side (the
#      same ops with their float64 differences), as JSON; policy-summary.log collects the
#      lines of both that a reviewer of the policy kernels reads first,
#   5. with .device/node.xz and node_modules: the addon through cmake-js, then the tap suite.
# Every step logs to ${OUT:-./gpu-results}/<step>.log; the script goes on past a failing step,
# prints a summary, and exits non-zero when any step failed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export RLHF_CUDA_ARCHS=${RLHF_CUDA_ARCHS:-90}
BUILD=build-gpu
RACECHECK_TIMEOUT=${RACECHECK_TIMEOUT:-300}

# nvcc and compute-sanitizer are often installed but not on PATH.
for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
  if [ -d "$dir" ] && ! command -v nvcc > /dev/null 2>&1; then export PATH="$PATH:$dir"; fi
done

summary=()
failed=0

# step NAME COMMAND...: runs COMMAND with its output in $OUT/NAME.log and records the outcome.
step() {
  local name=$1 start=$SECONDS status
  shift
  echo "== $name"
  if "$@" > "$OUT/$name.log" 2>&1; then
    status=ok
  else
    status="FAILED (exit $?)"
    failed=1
  fi
  summary+=("$(printf '%-16s %-18s %5ss' "$name" "$status" $((SECONDS - start)))")
  tail -n 8 "$OUT/$name.log"
}

skip() {
  summary+=("$(printf '%-16s skipped: %s' "$1" "$2")")
  echo "== $1 skipped: $2"
}

# Racecheck of the whole quick suite can outlast the device time; running out of time is
# reported, not counted as a failure.
racecheck() {
  timeout "$RACECHECK_TIMEOUT" compute-sanitizer --tool racecheck --error-exitcode 1 "$BUILD/rlhf_cuda_tests" --quick
  local rc=$?
  if [ $rc -eq 124 ]; then echo "racecheck: stopped after ${RACECHECK_TIMEOUT}s (not a failure)"; return 0; fi
  return $rc
}

unpack_node() {
  mkdir -p "$BUILD/node/bin"
  if command -v xz > /dev/null 2>&1; then
    xz -dc .device/node.xz > "$BUILD/node/bin/node"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      .device/node.xz "$BUILD/node/bin/node"
  fi
  chmod +x "$BUILD/node/bin/node"
  export PATH="$PWD/$BUILD/node/bin:$PATH"
  node --version
}

step configure cmake -S . -B "$BUILD" -G Ninja -DRLHF_CUDA=ON -DCMAKE_BUILD_TYPE=Release
step build-cuda cmake --build "$BUILD" --target rlhf_cuda_tests rlhf_cuda_bench
step build-all cmake --build "$BUILD"
step ctest bash -c "cd '$BUILD' && ctest --output-on-failure"

if command -v compute-sanitizer > /dev/null 2>&1; then
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$BUILD/rlhf_cuda_tests" --quick
  step racecheck racecheck
else
  skip memcheck "compute-sanitizer not found"
  skip racecheck "compute-sanitizer not found"
fi

# Past 2^31 and 2^32 rows (issue 7): needs about 64 GiB of device memory.
step big "$BUILD/rlhf_cuda_tests" --only big

step cuda-bench "$BUILD/rlhf_cuda_bench" --json "$OUT/cuda_bench.json" --algorithms

if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' > /dev/null 2>&1; then
  step torch python3 scripts/torch_side_by_side.py --json "$OUT/torch_side_by_side.json"
else
  skip torch "PyTorch with CUDA is not importable"
fi

# The policy family at a glance: its conformance verdicts (from CTest's full log: ctest itself
# prints a passing test's output only on failure), its bench rows, the actor loss's extra
# device memory, and torch's numbers for the same ops.
policy_summary() {
  local log="$BUILD/Testing/Temporary/LastTest.log"
  grep -hE '^(ok  |FAIL) (logprobs|firstInvalidLabel|klPenalty|shapeRewards|policyLoss|valueLoss|actorLoss|policy family)' \
    "$log" | awk '{print $1}' | sort | uniq -c
  grep -hE '^FAIL (logprobs|klPenalty|shapeRewards|policyLoss|valueLoss|actorLoss)' "$log"
  grep -hE '^(logprobs|actorLoss|ppo|valueLoss)' "$OUT/cuda-bench.log" "$OUT/torch.log" 2>/dev/null
  return 0
}
step policy-summary policy_summary

if [ ! -f .device/node.xz ]; then
  skip tap "no node binary at .device/node.xz"
elif [ ! -d node_modules ]; then
  step node unpack_node
  skip tap "node_modules is not present (npx is not available to install it)"
else
  step node unpack_node
  step addon env RLHF_CUDA=1 node scripts/build-native.js
  step typescript node node_modules/typescript/bin/tsc -p tsconfig.json
  step tap node node_modules/.bin/tap
fi

echo
echo "== summary (logs in $OUT)"
printf '%s\n' "${summary[@]}"
exit $failed
