// The plain TypeScript matrix multiply: the side-by-side baseline of `rlhf bench` (float64 sums).

/** c = op(a) op(b) for row-major a ([M,K], or [K,M] when transA) and b ([K,N], or [N,K] when transB). */
export function matmulReference(a: Float32Array, b: Float32Array, M: number, N: number, K: number, transA: boolean,
                                transB: boolean, c: Float32Array = new Float32Array(M * N)): Float32Array {
  for (let i = 0; i < M; ++i)
    for (let j = 0; j < N; ++j) {
      let s = 0;
      for (let k = 0; k < K; ++k) s += (transA ? a[k * M + i] : a[i * K + k]) * (transB ? b[j * K + k] : b[k * N + j]);
      c[i * N + j] = s;
    }
  return c;
}
