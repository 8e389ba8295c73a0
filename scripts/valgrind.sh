#!/usr/bin/env bash
# valgrind memcheck of the native conformance executables of the normal build (build/, made by
# `npm run build`): every optimised CPU kernel (AVX2 variant included) and the thread pool, with
# the production flags. Fails on any memcheck error or definite leak. Not in CI: it takes about
# 7 minutes on a 2-core machine (RELIABILITY.md has the last figures).
#
# The thread pool is a process-lifetime singleton whose workers still run at exit, so valgrind
# counts the thread-local block of one worker as "possibly lost" (304 bytes) and the pool itself
# as "still reachable"; neither is an error.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
status=0
logs=build/valgrind
summary=()
total_errors=0 total_definite=0 total_indirect=0 total_possible=0

command -v valgrind >/dev/null || { echo "valgrind: not installed"; exit 1; }
for exe in rlhf_native_tests rlhf_matmul_tests; do
  [ -x "build/$exe" ] || { echo "valgrind: build/$exe not found; run \`npm run build\` first"; exit 1; }
done
mkdir -p "$logs"

bytes() { # kind, log: the byte count valgrind reports for that leak kind (0 when absent)
  sed -n "s/.*$1: \([0-9,]*\) bytes.*/\1/p" "$2" | tr -d , | tail -1 | grep . || echo 0
}

for exe in rlhf_native_tests rlhf_matmul_tests; do
  printf '\n== valgrind: %s\n' "$exe"
  log="$logs/$exe.memcheck.txt"
  t0=$SECONDS
  valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
    --log-file="$log" "build/$exe" | tee "$logs/$exe.out.txt"
  rc=${PIPESTATUS[0]}
  grep -A6 'LEAK SUMMARY' "$log"
  grep 'ERROR SUMMARY' "$log"
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tr -d , | tail -1 | grep . || echo 1)
  definite=$(bytes 'definitely lost' "$log") indirect=$(bytes 'indirectly lost' "$log") possible=$(bytes 'possibly lost' "$log")
  summary+=("$exe: $errors errors, definite $definite B, indirect $indirect B, possible $possible B, $((SECONDS - t0)) s")
  total_errors=$((total_errors + errors)) total_definite=$((total_definite + definite))
  total_indirect=$((total_indirect + indirect)) total_possible=$((total_possible + possible))
  if [ "$rc" -ne 0 ] || ! tail -1 "$logs/$exe.out.txt" | grep -Eq '^[0-9]+ passed, 0 failed$'; then
    echo "valgrind: FAILED: $exe (exit $rc; memcheck log $log)"
    status=1
  fi
done

echo
printf '%s\n' "${summary[@]}"
echo "valgrind: $([ $status -eq 0 ] && echo passed || echo FAILED); $total_errors errors, leaks definite" \
  "$total_definite B, indirect $total_indirect B, possible $total_possible B; $((SECONDS - start)) s"
exit $status
