// rl.matmul (native/include/rlhf/nn.h): every transpose combination and awkward shapes against
// a float64 product, within the float32 error bound K * 2^-24 * sum |a||b|; `out` and
// `accumulate`; bit-identity across thread counts; the CPU paths; bad input; the Async form.
import t from 'tap';

import * as rl from '../lib/index';
import { T as TapT, expectBitIdentical, expectError, randomFloats, rng, snapshot, withCpuPath, withThreads } from './helpers/index';

/** op(a) op(b) in float64, and sum |op(a)||op(b)| for the error bound. */
function reference(a: Float32Array, b: Float32Array, M: number, N: number, K: number, transA: boolean, transB: boolean) {
  const value = new Float64Array(M * N);
  const scale = new Float64Array(M * N);
  for (let i = 0; i < M; ++i)
    for (let j = 0; j < N; ++j) {
      let s = 0, m = 0;
      for (let k = 0; k < K; ++k) {
        const x = transA ? a[k * M + i] : a[i * K + k];
        const y = transB ? b[j * K + k] : b[k * N + j];
        s += x * y;
        m += Math.abs(x * y);
      }
      value[i * N + j] = s;
      scale[i * N + j] = m;
    }
  return { value, scale };
}

function expectWithinBound(t: TapT, got: Float32Array, want: { value: Float64Array; scale: Float64Array }, K: number, msg: string) {
  for (let i = 0; i < got.length; ++i) {
    const bound = 4 * Math.max(K, 1) * 2 ** -24 * want.scale[i] + 1e-30;
    if (!(Math.abs(got[i] - want.value[i]) <= bound)) {
      t.fail(`${msg}: at ${i} got ${got[i]}, expected ${want.value[i]} (bound ${bound})`);
      return;
    }
  }
  t.pass(msg);
}

function operands(seed: number, M: number, N: number, K: number, transA: boolean, transB: boolean) {
  const r = rng(seed);
  const a = randomFloats(r, M * K), b = randomFloats(r, K * N);
  return {
    a, b,
    A: rl.tensor(a, transA ? [K, M] : [M, K]),
    B: rl.tensor(b, transB ? [N, K] : [K, N]),
  };
}

const shapes: [number, number, number][] = [
  [1, 1, 1], [7, 5, 3], [17, 33, 65], [128, 64, 4], [128, 2, 64], [64, 64, 128], [129, 127, 131], [1, 300, 17], [300, 1, 17],
];

t.test('every transpose combination against float64', async (t) => {
  for (const [M, N, K] of shapes)
    for (const transA of [false, true])
      for (const transB of [false, true]) {
        const o = operands(M * 1000 + N * 10 + K, M, N, K, transA, transB);
        const c = rl.matmul(o.A, o.B, { transA, transB });
        t.same(c.shape, [M, N], 'shape [M, N]');
        expectWithinBound(t, snapshot(c), reference(o.a, o.b, M, N, K, transA, transB), K,
          `[${M}x${N}x${K}] transA=${transA} transB=${transB}`);
      }
});

t.test('empty dimensions', async (t) => {
  const z = rl.matmul(rl.tensor(new Float32Array(0), [3, 0]), rl.tensor(new Float32Array(0), [0, 4]));
  t.same(Array.from(z.dataSync()), new Array(12).fill(0), 'K = 0 gives zeros');
  t.same(rl.matmul(rl.tensor(new Float32Array(0), [0, 5]), rl.tensor(new Float32Array(10), [5, 2])).shape, [0, 2], 'M = 0');
  const out = rl.tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
  rl.matmul(rl.tensor(new Float32Array(0), [2, 0]), rl.tensor(new Float32Array(0), [0, 2]), { out, accumulate: true });
  t.same(Array.from(out.dataSync()), [1, 2, 3, 4], 'K = 0 with accumulate leaves out unchanged');
});

t.test('out and accumulate', async (t) => {
  const M = 33, N = 20, K = 40;
  const o = operands(7, M, N, K, false, true);
  const start = randomFloats(rng(8), M * N);
  const out = rl.tensor(Float32Array.from(start), [M, N]);
  const c = rl.matmul(o.A, o.B, { transB: true, out, accumulate: true });
  t.equal(c, out, 'returns `out`');
  const want = reference(o.a, o.b, M, N, K, false, true);
  for (let i = 0; i < want.value.length; ++i) {
    want.value[i] += start[i];
    want.scale[i] += Math.abs(start[i]);
  }
  expectWithinBound(t, snapshot(out), want, K + 1, 'out += a b^T');
  rl.matmul(o.A, o.B, { transB: true, out });
  expectWithinBound(t, snapshot(out), reference(o.a, o.b, M, N, K, false, true), K, 'out = a b^T overwrites');
});

t.test('NaN reaches exactly the rows and columns it should', async (t) => {
  const a = new Float32Array(12).fill(1), b = new Float32Array(12).fill(1);
  a[5] = NaN;  // row 1 of a [3, 4]
  const c = snapshot(rl.matmul(rl.tensor(a, [3, 4]), rl.tensor(b, [4, 3])));
  t.same(Array.from(c).map(Number.isNaN), [false, false, false, true, true, true, false, false, false], 'row 1 only');
});

t.test('bit-identical across thread counts, CPU paths within the bound', async (t) => {
  const [M, N, K] = [300, 257, 190];
  const o = operands(11, M, N, K, true, false);
  const one = withThreads(1, () => snapshot(rl.matmul(o.A, o.B, { transA: true })));
  for (const n of [2, 3]) expectBitIdentical(t, withThreads(n, () => snapshot(rl.matmul(o.A, o.B, { transA: true }))), one, `${n} threads`);
  const want = reference(o.a, o.b, M, N, K, true, false);
  for (const path of ['baseline', 'reference'] as const)
    expectWithinBound(t, withCpuPath(path, () => snapshot(rl.matmul(o.A, o.B, { transA: true }))), want, K, `${path} path`);
});

t.test('the Async form', async (t) => {
  const o = operands(12, 64, 48, 80, false, false);
  const sync = snapshot(rl.matmul(o.A, o.B));
  expectBitIdentical(t, snapshot(await rl.matmulAsync(o.A, o.B)), sync, 'matmulAsync equals matmul');
});

t.test('bad input is a named error', async (t) => {
  const a = rl.tensor(new Float32Array(6), [2, 3]), b = rl.tensor(new Float32Array(12), [3, 4]);
  expectError(t, () => rl.matmul(rl.tensor(new Float32Array(6)), b), RangeError, /matmul: `a` must be a 2-D float32 Tensor/);
  expectError(t, () => rl.matmul(a, new Float32Array(12) as unknown as rl.Tensor), RangeError, /`b` must be a 2-D/);
  expectError(t, () => rl.matmul(a, rl.tensor(new Int32Array(12), [3, 4])), TypeError, /expected a float32 Tensor .* for `b`/);
  expectError(t, () => rl.matmul(a, rl.tensor(new Float32Array(8), [2, 4])), RangeError, /`b` must have 3 rows \(the inner dimension/);
  expectError(t, () => rl.matmul(a, b, { transB: true }), RangeError, /`b` must have 3 columns/);
  expectError(t, () => rl.matmul(a, b, { out: rl.tensor(new Float32Array(6), [2, 3]) }), RangeError, /`out` must have shape \[2, 4\]/);
  expectError(t, () => rl.matmul(a, b, { accumulate: true }), RangeError, /`accumulate` needs `out`/);
  expectError(t, () => rl.matmul(a, b, { transA: 1 as unknown as boolean }), TypeError, /a boolean for `transA`/);
  const gone = rl.tensor(new Float32Array(6), [2, 3]);
  gone.dispose();
  expectError(t, () => rl.matmul(gone, b), Error, /has been disposed/, 'E_DISPOSED');
});
