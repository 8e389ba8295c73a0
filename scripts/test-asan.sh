#!/usr/bin/env bash
# AddressSanitizer + UBSan run (npm run test:asan; RELIABILITY.md). Builds the kernels, the addon
# and the native tests with RLHF_SANITIZE=ON (CPU-only) into build-asan/, runs the two native
# conformance executables with leak detection, then a subset of the tap suite against the
# sanitized addon. Any sanitizer report fails the run. Ends with one summary line.
#
# Node itself is not sanitized, so the ASan runtime must be preloaded into it (it refuses to
# start when it is not first in the library list); libubsan needs no preload, the addon pulls it
# in. Leak detection is off inside Node, whose own allocations it would report. The sanitizers
# halt the process at the first report; reports go to stderr (UBSan ignores log_path when ASan
# is loaded), which is captured with each step's output and counted from there.
#
#   ASAN_TAP_FILES="test/gae.test.ts ..."  run these tap files instead of the default subset
#   FUZZ_CALLS=N                           fuzzer budget under ASan (default 2000)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$SECONDS
out="$root/build-asan"
status=0

step() { printf '\n== test:asan (%d s): %s\n' $((SECONDS - start)) "$*"; }
fail() { echo "test:asan: FAILED: $*"; status=1; }

# Every op family (advantages, statistics, log-probs, policy, value, preference, DPO, matmul),
# the models and optimizer, tensors, a trainer, the fuzzer at a reduced budget, and the
# concurrency tests (Async calls in flight, worker_threads, exits with work in flight).
default_files="test/gae.test.ts test/token-gae.test.ts test/returns.test.ts test/statistics.test.ts
  test/group-advantages.test.ts test/logprobs.test.ts test/sequence-logprobs.test.ts test/kl.test.ts
  test/policy-loss.test.ts test/value-loss.test.ts test/actor-loss.test.ts test/pairwise-loss.test.ts
  test/dpo-loss.test.ts test/matmul.test.ts test/nn-models.test.ts test/optim.test.ts
  test/tensor.test.ts test/dpo-trainer.test.ts test/fuzz.test.ts test/concurrency.test.ts"
# shellcheck disable=SC2206
tap_files=(${ASAN_TAP_FILES:-$default_files})

step "build (RLHF_SANITIZE=ON, CPU-only) into build-asan/"
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p "$out"
RLHF_SANITIZE=ON RLHF_CUDA=OFF node node_modules/cmake-js/bin/cmake-js build -d . -O build-asan \
  --CDRLHF_SANITIZE=ON --CDRLHF_CUDA=OFF --prefer-make --parallel "$jobs" >"$out/build.log" 2>&1
if [ $? -ne 0 ]; then
  tail -60 "$out/build.log"
  echo "test:asan: the sanitized build failed (log above, all of it in build-asan/build.log)"
  exit 1
fi
addon="$out/Release/rlhf.node"
[ -f "$addon" ] || { echo "test:asan: $addon was not built"; exit 1; }
libasan=$(g++ -print-file-name=libasan.so)
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
report_pattern='^==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)|: runtime error: '
reports() { grep -Ec "$report_pattern" "$@" | awk -F: '{ n += $NF } END { print n + 0 }'; }
found=0

step "the alarm works: a heap overflow in a library loaded into Node is reported and fails Node"
canary="$out/canary"
mkdir -p "$canary"
cat >"$canary/canary.cpp" <<'EOF'
#include <cstdlib>
__attribute__((constructor)) static void overflow() {
  volatile char* p = static_cast<char*>(std::malloc(8));
  p[8] = 1;
  std::free((void*)p);
}
EOF
g++ -shared -fPIC -fsanitize=address -g -o "$canary/canary.so" "$canary/canary.cpp"
LD_PRELOAD="$libasan" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" \
  node -e "process.dlopen({ exports: {} }, process.argv[1])" "$canary/canary.so" >"$canary/out.txt" 2>&1
canary_rc=$?
if [ $canary_rc -ne 0 ] && [ "$(reports "$canary/out.txt")" -eq 1 ] && grep -q heap-buffer-overflow "$canary/out.txt"; then
  echo "ok: node exited $canary_rc with a heap-buffer-overflow report"
else
  fail "the canary overflow was not reported (exit $canary_rc); sanitizer reports would be lost"
fi

native_passed=0
for exe in rlhf_native_tests rlhf_matmul_tests; do
  step "$exe (ASan with leak detection, UBSan)"
  ASAN_OPTIONS="detect_leaks=1:halt_on_error=1" "$out/$exe" 2>&1 | tee "$out/$exe.log"
  rc=${PIPESTATUS[0]}
  found=$((found + $(reports "$out/$exe.log")))
  verdict=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/$exe.log" | tail -1)
  if [ "$rc" -ne 0 ]; then fail "$exe exited $rc"; fi
  if [[ $verdict =~ ^([0-9]+)\ passed,\ 0\ failed$ ]]; then
    native_passed=$((native_passed + BASH_REMATCH[1]))
  else
    fail "$exe: no clean verdict line"
  fi
done

step "tap subset against the sanitized addon (${#tap_files[@]} files)"
tapout="$out/tap.txt"
LD_PRELOAD="$libasan" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" RLHF_ADDON_PATH="$addon" \
  RLHF_POISON_OUTPUTS=1 FUZZ_CALLS="${FUZZ_CALLS:-2000}" npx tap --reporter=tap --timeout=600 "${tap_files[@]}" >"$tapout" 2>&1
tapstatus=$?
cat "$tapout"
read -r tp tf ts < <(node scripts/count-tap.js "$tapout")
[ "$tapstatus" -eq 0 ] || fail "tap exited $tapstatus"
[ "$tf" -eq 0 ] || fail "$tf tap test points failed"
found=$((found + $(reports "$tapout")))
[ "$found" -eq 0 ] || fail "$found sanitizer report(s) above (search for 'ERROR: ' and 'runtime error: ')"

echo
echo "test:asan: $found sanitizer reports; native $native_passed checks passed;" \
  "tap $tp passed, $tf failed, $ts skipped (${#tap_files[@]} files); $((SECONDS - start)) s"
exit $status
