#!/usr/bin/env node
// Soak: a million small op calls and a thousand large ones, with resident memory (RSS) measured
// after a warm-up and at the end, garbage collected both times. A leak of even a few bytes per
// call shows as megabytes here. Needs the built package (dist/) and `node --expose-gc`.
//   node --expose-gc scripts/soak.js [--small N] [--large N]
const rl = require('../dist/index.js');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

function rssMiB() {
  if (global.gc) global.gc();
  return process.memoryUsage().rss / 2 ** 20;
}

const smallCalls = arg('small', 1e6);
const largeCalls = arg('large', 1000);

const T = 128;
const small = { rewards: rl.tensor(new Float32Array(T).fill(1), [T, 1]), values: rl.tensor(new Float32Array(T), [T, 1]),
  lastValues: rl.tensor(new Float32Array(1), [1]) };
const n = 1 << 20;
const big = rl.tensor(new Float32Array(n).fill(0.5), [n]);
const bigMask = rl.tensor(new Uint8Array(n).fill(1), [n], { dtype: 'uint8' });
const a = rl.tensor(new Float32Array(256 * 256).fill(0.1), [256, 256]);

function smallStep(i) {
  switch (i % 4) {
    case 0: return rl.gae(small, { gamma: 0.99, lambda: 0.95 });
    case 1: return rl.maskedMean(small.rewards.dataSync(), null);
    case 2: return rl.pairwiseRewardLoss({ chosen: new Float32Array(8).fill(1), rejected: new Float32Array(8) });
    default: return rl.klPenalty(new Float32Array(16).fill(-1), new Float32Array(16).fill(-1.1));
  }
}

function largeStep(i) {
  if (i % 2 === 0) return rl.maskedWhiten(big, bigMask);
  return rl.matmul(a, a);
}

for (let i = 0; i < 20000; ++i) smallStep(i);
for (let i = 0; i < 20; ++i) largeStep(i);
const before = rssMiB();
const t0 = process.hrtime.bigint();
for (let i = 0; i < smallCalls; ++i) smallStep(i);
const afterSmall = rssMiB();
for (let i = 0; i < largeCalls; ++i) largeStep(i);
const after = rssMiB();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({
  smallCalls, largeCalls, seconds: Number(seconds.toFixed(1)),
  rssBeforeMiB: Number(before.toFixed(1)), rssAfterSmallMiB: Number(afterSmall.toFixed(1)), rssAfterMiB: Number(after.toFixed(1)),
  growthMiB: Number((after - before).toFixed(1)),
}));
