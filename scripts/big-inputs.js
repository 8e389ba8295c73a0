#!/usr/bin/env node
// Inputs beyond 2^31 elements on the CPU (issue 7): every kernel indexes with 64-bit integers, so
// these must give the right answer, not a silently truncated one. Each case checks a value that
// depends on the elements past 2^31. Needs about 11 GB of free memory and a few minutes; run it
// with `node --expose-gc scripts/big-inputs.js` (RELIABILITY.md records the last run).
'use strict';
const rl = require('../dist/index.js');

const BIG = 2 ** 31 + 96;  // past the int32 range, and not a multiple of any SIMD width
const gc = global.gc ?? (() => {});
let failed = 0;

function check(name, got, want, tol) {
  const ok = Math.abs(got - want) <= tol * Math.max(1, Math.abs(want));
  if (!ok) failed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${got} (expected ${want})`);
}

function timed(name, fn) {
  const t0 = process.hrtime.bigint();
  fn();
  gc();
  console.log(`     ${name}: ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s`);
}

// Masked mean and variance over BIG elements: x = 1 everywhere except the last 96 (past 2^31),
// which are 1001, with every element valid. A kernel that stopped at 2^31 (or wrapped) would
// miss them.
timed('maskedMean / maskedVar', () => {
  const x = new Float32Array(BIG).fill(1);
  x.fill(1001, BIG - 96);
  const mask = new Uint8Array(BIG).fill(1);
  const mean = 1 + (1000 * 96) / BIG;
  check(`maskedMean over ${BIG} elements`, rl.maskedMean(x, mask), mean, 1e-9);
  const variance = (96 * (1001 - mean) ** 2 + (BIG - 96) * (1 - mean) ** 2) / BIG;
  check(`maskedVar over ${BIG} elements`, rl.maskedVar(x, mask, { unbiased: false }), variance, 1e-6);
});

// Sequence log-probs of [2, T] with 2*T > 2^31: row 1 starts past 2^30 elements and ends past
// 2^31; only its last token is valid and carries -7.
timed('sequenceLogprobs', () => {
  const T = BIG / 2;
  const lp = new Float32Array(2 * T).fill(-1);
  const mask = new Uint8Array(2 * T);
  mask[0] = 1;
  mask[2 * T - 1] = 1;
  lp[2 * T - 1] = -7;
  const s = rl.sequenceLogprobs(rl.tensor(lp, [2, T]), rl.tensor(mask, [2, T], { dtype: 'uint8' })).dataSync();
  check(`sequenceLogprobs [2, ${T}] row 0`, s[0], -1, 0);
  check(`sequenceLogprobs [2, ${T}] row 1 (its one token lies past 2^31)`, s[1], -7, 0);
});

// A matrix with more than 2^31 elements times a vector: the rows past 2^31 / K are ones, the
// others zeros, so y counts them.
timed('matmul', () => {
  const K = 2 ** 15;
  const M = Math.ceil(BIG / K);
  const a = new Float32Array(M * K);
  const firstOnes = Math.floor(2 ** 31 / K);
  a.fill(1, firstOnes * K);
  const y = rl.matmul(rl.tensor(a, [M, K]), rl.tensor(new Float32Array(K).fill(1), [K, 1])).dataSync();
  check(`matmul [${M}, ${K}] x [${K}, 1]: a row before 2^31`, y[firstOnes - 1], 0, 0);
  check(`matmul [${M}, ${K}] x [${K}, 1]: the last row`, y[M - 1], K, 0);
});

// Log-probs from logits [N, V] with N*V > 2^31: all zeros except the label of the last row.
timed('logprobsFromLogits', () => {
  const V = 2 ** 14;
  const N = Math.ceil(BIG / V);
  const logits = new Float32Array(N * V);
  const labels = new Int32Array(N);
  labels[N - 1] = V - 3;
  logits[(N - 1) * V + V - 3] = 5;
  const r = rl.logprobsFromLogits(rl.tensor(logits, [N, V]), rl.tensor(labels, [N], { dtype: 'int32' }), { entropy: true });
  const lp = r.logprobs.dataSync();
  check(`logprobsFromLogits [${N}, ${V}]: row 0`, lp[0], -Math.log(V), 1e-6);
  check(`logprobsFromLogits [${N}, ${V}]: the last row (past 2^31)`, lp[N - 1], 5 - Math.log(Math.exp(5) + V - 1), 1e-6);
});

console.log(`${failed === 0 ? 'all passed' : `${failed} failed`}`);
process.exit(failed === 0 ? 0 : 1);
