#!/usr/bin/env bash
# The native matrix multiply beside numpy's `a @ b` (its BLAS: OpenBLAS in the wheels) on the same
# shapes, layouts and thread count, in one run: the matmul rows of rlhf_native_bench --matmul,
# then numpy timed the same way (float32, the best of many runs, C preallocated), side by side
# with the ratio native / numpy.
#   scripts/matmul-vs-numpy.sh [--threads N] [--build DIR]   (DIR: where rlhf_native_bench is; build)
set -euo pipefail
threads=2
build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--build DIR]" >&2; exit 2 ;;
  esac
done
bench="$build/rlhf_native_bench"
if [ ! -x "$bench" ]; then
  echo "$bench not found: build it first (cmake --build $build --target rlhf_native_bench)" >&2
  exit 1
fi

native="$("$bench" --matmul --threads "$threads")"
echo "$native"
echo
# numpy's BLAS reads its thread count from the environment when it loads.
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
NATIVE="$native" python3 - <<'PY'
import os, time
import numpy as np

def best_seconds(fn, min_seconds=0.3, min_runs=5):
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)

rng = np.random.default_rng(0)
print(f"numpy {np.__version__}, {os.environ['OPENBLAS_NUM_THREADS']} threads")
print(f"{'shape MxNxK':<16} {'layout':<6} {'native GFLOP/s':>15} {'numpy GFLOP/s':>14} {'native/numpy':>13}")
for line in os.environ["NATIVE"].splitlines():
    f = line.split()
    if len(f) < 7 or f[0] != "matmul" or "x" not in f[1]:
        continue
    M, N, K = map(int, f[1].split("x"))
    layout, native = f[2], float(f[5])
    # Stored as the native bench stores them: A [M,K] or [K,M] when transposed, B [K,N] or [N,K].
    a = rng.standard_normal((K, M) if layout[0] == "T" else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if layout[1] == "T" else (K, N), dtype=np.float32)
    opa = a.T if layout[0] == "T" else a
    opb = b.T if layout[1] == "T" else b
    c = np.empty((M, N), dtype=np.float32)
    seconds = best_seconds(lambda: np.matmul(opa, opb, out=c))
    gflops = 2.0 * M * N * K / seconds / 1e9
    print(f"{f[1]:<16} {layout:<6} {native:15.1f} {gflops:14.1f} {native / gflops:12.2f}x")
PY
