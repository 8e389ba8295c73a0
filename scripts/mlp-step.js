#!/usr/bin/env node
// Times issue 5's PPO minibatch step (forward, backward without the input gradient, AdamW) of a
// [4 -> 64 -> 64 -> 2] tanh MLP on 128 observations, step by step, and prints the median, the
// 10th and 90th percentiles and the mean. `bench --op "mlp step"` gives one median; this gives the
// spread, and takes the tree to load, so that an old checkout (with its own built addon) and this
// one can be timed in turns in the same session:
//   node scripts/mlp-step.js [--tree DIR] [--threads N] [--steps N]
'use strict';
const path = require('path');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const tree = path.resolve(arg('tree', path.join(__dirname, '..')));
const threads = Number(arg('threads', 0));
const steps = Number(arg('steps', 30000));
const rl = require(path.join(tree, 'dist', 'index.js'));
if (threads > 0) rl.setNumThreads(threads);

const B = 128, obs = 4, act = 2;
const model = rl.nn.mlp({ inputSize: obs, hiddenSizes: [64, 64], outputSize: act, seed: 1 });
const opt = rl.optim.adamw(model.parameters(), { lr: 3e-4 });
const x = rl.tensor(Float32Array.from({ length: B * obs }, (_, i) => Math.sin(i)), [B, obs]);
const g = rl.tensor(Float32Array.from({ length: B * act }, (_, i) => Math.cos(i) * 0.01), [B, act]);
const step = () => {
  model.zeroGrad();
  model.forward(x);
  model.backward(g, { inputGrad: false });
  opt.step();
};

for (let i = 0; i < 5000; ++i) step();
const times = new Float64Array(steps);
const start = process.hrtime.bigint();
for (let i = 0; i < steps; ++i) {
  const t = process.hrtime.bigint();
  step();
  times[i] = Number(process.hrtime.bigint() - t) / 1e3;
}
const mean = Number(process.hrtime.bigint() - start) / 1e3 / steps;
times.sort();
const at = (q) => times[Math.min(steps - 1, Math.floor(q * steps))].toFixed(1);
console.log(`${tree} threads=${rl.getNumThreads()}: median ${at(0.5)} us, p10 ${at(0.1)}, p90 ${at(0.9)}, mean ${mean.toFixed(1)}`);
