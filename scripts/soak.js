#!/usr/bin/env node
// Soak: a million small op calls, twenty thousand Async calls and a thousand large calls (whitening,
// matmul, an MLP training step), with resident memory (RSS) measured after a warm-up and at the
// end, garbage collected both times. A leak of even a few bytes per call shows as megabytes here.
// Needs the built package (dist/) and `node --expose-gc`. With --max-growth it exits 1 when RSS
// grew by more than that many MiB (CI uses 10).
//   node --expose-gc scripts/soak.js [--small N] [--async N] [--large N] [--max-growth MiB]
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
const asyncCalls = arg('async', 20000);
const largeCalls = arg('large', 1000);
const maxGrowth = arg('max-growth', Infinity);

const T = 128;
const small = { rewards: rl.tensor(new Float32Array(T).fill(1), [T, 1]), values: rl.tensor(new Float32Array(T), [T, 1]),
  lastValues: rl.tensor(new Float32Array(1), [1]) };
const n = 1 << 20;
const big = rl.tensor(new Float32Array(n).fill(0.5), [n]);
const bigMask = rl.tensor(new Uint8Array(n).fill(1), [n], { dtype: 'uint8' });
const a = rl.tensor(new Float32Array(256 * 256).fill(0.1), [256, 256]);
const net = rl.nn.mlp({ inputSize: 64, hiddenSizes: [256, 256], outputSize: 8, seed: 1 });
const opt = rl.optim.adamw(net.parameters(), { lr: 1e-4 });
const netIn = rl.tensor(new Float32Array(512 * 64).fill(0.3), [512, 64]);
const netGrad = rl.tensor(new Float32Array(512 * 8).fill(0.01), [512, 8]);
const s8 = rl.tensor(new Float32Array(64).fill(0.2), [8, 8]);

function smallStep(i) {
  switch (i % 4) {
    case 0: return rl.gae(small, { gamma: 0.99, lambda: 0.95 });
    case 1: return rl.maskedMean(small.rewards.dataSync(), null);
    case 2: return rl.pairwiseRewardLoss({ chosen: new Float32Array(8).fill(1), rejected: new Float32Array(8) });
    default: return rl.klPenalty(new Float32Array(16).fill(-1), new Float32Array(16).fill(-1.1));
  }
}

// Sixteen Async calls in flight at a time: each holds references and a libuv request until it
// settles.
async function asyncBatch(i) {
  const batch = [];
  for (let k = 0; k < 16; ++k) {
    batch.push((i + k) % 2 === 0 ? rl.gaeAsync(small, { gamma: 0.99, lambda: 0.95 }) : rl.matmulAsync(s8, s8));
  }
  return Promise.all(batch);
}

function largeStep(i) {
  switch (i % 3) {
    case 0: return rl.maskedWhiten(big, bigMask);
    case 1: return rl.matmul(a, a);
    default: {
      net.zeroGrad();
      net.forward(netIn);
      net.backward(netGrad);
      return opt.step();
    }
  }
}

async function main() {
  // A warm-up of every kind of call, long enough for V8's heaps and the C allocator's caches (its
  // mmap threshold adapts to the sizes seen) to reach their steady size: growth after it is ours.
  for (let i = 0; i < 20000; ++i) smallStep(i);
  for (let i = 0; i < asyncCalls / 4; i += 16) await asyncBatch(i);
  for (let i = 0; i < largeCalls / 4; ++i) largeStep(i);
  const before = rssMiB();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < smallCalls; ++i) smallStep(i);
  const afterSmall = rssMiB();
  for (let i = 0; i < asyncCalls; i += 16) await asyncBatch(i);
  const afterAsync = rssMiB();
  for (let i = 0; i < largeCalls; ++i) largeStep(i);
  const after = rssMiB();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const growth = after - before;
  console.log(JSON.stringify({
    smallCalls, asyncCalls, largeCalls, seconds: Number(seconds.toFixed(1)),
    rssBeforeMiB: Number(before.toFixed(1)), rssAfterSmallMiB: Number(afterSmall.toFixed(1)),
    rssAfterAsyncMiB: Number(afterAsync.toFixed(1)), rssAfterMiB: Number(after.toFixed(1)),
    growthMiB: Number(growth.toFixed(1)),
  }));
  if (growth > maxGrowth) {
    console.error(`soak: RSS grew by ${growth.toFixed(1)} MiB, more than --max-growth ${maxGrowth}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
