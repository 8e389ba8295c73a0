#!/usr/bin/env node
// Soak: a million small op calls, twenty thousand Async calls and a thousand large calls (whitening,
// matmul, an MLP training step), with live memory (RSS less V8's unused heap) measured at the end
// of each of eight rounds after a warm-up, garbage collected. A leak of a few tens of bytes per call
// shows.
// Needs the built package (dist/) and `node --expose-gc`. With --max-growth it exits 1 when that
// memory grew by more than that many MiB (CI uses 16).
//   node --expose-gc scripts/soak.js [--small N] [--async N] [--large N] [--max-growth MiB]
'use strict';
const { spawnSync } = require('node:child_process');

// glibc adapts its mmap threshold to the sizes it sees and then keeps freed megabytes on its
// heaps, which swings RSS by tens of MiB between samples; fixed thresholds make RSS follow what
// is live. Tunables are read at start-up, so the script runs itself again with them.
if (process.platform === 'linux' && process.env.GLIBC_TUNABLES === undefined) {
  const tunables = 'glibc.malloc.mmap_threshold=131072:glibc.malloc.trim_threshold=131072';
  const r = spawnSync(process.execPath, [...process.execArgv, __filename, ...process.argv.slice(2)],
    { stdio: 'inherit', env: { ...process.env, GLIBC_TUNABLES: tunables } });
  process.exit(r.status ?? 1);
}

const rl = require('../dist/index.js');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

// Resident memory less the unused part of V8's heap (rss - heapTotal + heapUsed): native
// allocations, ArrayBuffers, thread stacks and live JS objects, where a leak of the addon or of
// the TypeScript layer would show. V8 sizes its heap spaces as it likes, which alone moves RSS by
// 8-25 MiB between samples.
function liveMiB() {
  if (global.gc) global.gc();
  const m = process.memoryUsage();
  return (m.rss - m.heapTotal + m.heapUsed) / 2 ** 20;
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

// The calls run in rounds with memory sampled after each. Allocators keep or return freed memory
// as they see fit, so one sample swings by several MiB either way; a leak instead raises every
// sample. Growth is the lowest of the last three samples minus the lowest
// of the first three.
const rounds = 8;

async function runRound() {
  for (let i = 0; i < smallCalls / rounds; ++i) smallStep(i);
  for (let i = 0; i < asyncCalls / rounds; i += 16) await asyncBatch(i);
  for (let i = 0; i < largeCalls / rounds; ++i) largeStep(i);
}

async function main() {
  // A warm-up of every kind of call, so that V8's heaps and the allocators' caches reach their
  // steady size first.
  for (let i = 0; i < 20000; ++i) smallStep(i);
  for (let i = 0; i < asyncCalls / 4; i += 16) await asyncBatch(i);
  for (let i = 0; i < largeCalls / 4; ++i) largeStep(i);
  const t0 = process.hrtime.bigint();
  const samples = [];
  for (let r = 0; r < rounds; ++r) {
    await runRound();
    samples.push(Number(liveMiB().toFixed(1)));
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const growth = Math.min(...samples.slice(-3)) - Math.min(...samples.slice(0, 3));
  console.log(JSON.stringify({
    smallCalls, asyncCalls, largeCalls, seconds: Number(seconds.toFixed(1)), liveMiB: samples,
    growthMiB: Number(growth.toFixed(1)),
  }));
  if (growth > maxGrowth) {
    console.error(`soak: live memory grew by ${growth.toFixed(1)} MiB, more than --max-growth ${maxGrowth}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
