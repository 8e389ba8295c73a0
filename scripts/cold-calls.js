#!/usr/bin/env node
// Times small calls of a few ops made with cold caches, as a training loop makes them right after
// a large op has streamed its data through every cache: each timed call comes after a STREAM
// triad over twice the last-level cache (and 300 us of spinning, for the pool's threads to settle).
// What it shows is the cost of a call outside its kernel: the JavaScript, the Node-API crossing,
// the addon's argument checks, the stats. With --tree, another built checkout's library is loaded
// too and the two are called in turns, for a before/after in one process.
//   node scripts/cold-calls.js [--tree DIR] [--runs N] [--compile N]
// (--runs: timed calls an op and side, 300 by default; --compile: calls of each op first, 3000
// by default, by which V8 has compiled the library's JavaScript; 0 times the interpreter.)
'use strict';
const fs = require('node:fs');
const path = require('node:path');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const runs = Number(arg('runs', 300));
const compileCalls = Number(arg('compile', 3000));
const trees = [['this', path.resolve(__dirname, '..')]];
if (arg('tree') !== undefined) trees.push(['other', fs.realpathSync(path.resolve(arg('tree')))]);
if (process.env.RLHF_ADDON_PATH) {
  console.error('cold-calls: unset RLHF_ADDON_PATH: with it both sides would load the one addon');
  process.exit(2);
}

// One side's library, its addon loaded now, and its calls: small shapes, outputs reused.
function side(name, root) {
  const dist = path.join(root, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) {
    console.error(`cold-calls: ${root} has no dist/: build it first`);
    process.exit(2);
  }
  const rl = require(path.join(dist, 'index.js'));
  rl.backends();
  const native = require(path.join(dist, 'native.js')).native();
  const n = 1024;
  const f = (fill) => rl.tensor(new Float32Array(n).map((_, i) => fill(i)), [n]);
  const chosen = f((i) => Math.sin(i)), rejected = f((i) => Math.cos(i));
  const pair = rl.pairwiseRewardLoss({ chosen, rejected });
  const pairOut = { gradChosen: pair.gradChosen, gradRejected: pair.gradRejected };
  const dpoInputs = { policyChosen: f((i) => -1 - (i % 7) * 0.1), policyRejected: f((i) => -2 + (i % 5) * 0.1), refChosen: f(() => -1.5),
    refRejected: f(() => -1.5) };
  const lp = rl.tensor(new Float32Array(n).fill(-1), [1, n]), adv = rl.tensor(new Float32Array(n).map((_, i) => (i % 3) - 1), [1, n]);
  const policyGrad = rl.ppoPolicyLoss({ logprobs: lp, oldLogprobs: lp, advantages: adv }).grad;
  const rewards = rl.tensor(new Float32Array(n).map((_, i) => (i % 9) * 0.1), [4, n / 4]);
  const values = rl.tensor(new Float32Array(n).fill(0.5), [4, n / 4]);
  const gae = rl.tokenGae({ rewards, values }, { maskMode: 'none' });
  const calls = {
    [`pairwiseRewardLoss [${n}]`]: () => rl.pairwiseRewardLoss({ chosen, rejected }, { out: pairOut }),
    [`dpoLoss [${n}]`]: () => rl.dpoLoss(dpoInputs, { out: pairOut }),
    [`ppoPolicyLoss [1,${n}]`]: () => rl.ppoPolicyLoss({ logprobs: lp, oldLogprobs: lp, advantages: adv }, { out: policyGrad }),
    [`tokenGae [4,${n / 4}]`]: () => rl.tokenGae({ rewards, values }, { maskMode: 'none', out: gae }),
  };
  return { name, native, calls };
}

const sides = trees.map(([name, root]) => side(name, root));
const triadElements = sides[0].native.memoryTriadElements();
const ta = new Float32Array(triadElements);
const tb = new Float32Array(triadElements).fill(1);
const tc = new Float32Array(triadElements).fill(2);
const median = (xs) => [...xs].sort((p, q) => p - q)[xs.length >> 1];

for (const s of sides) for (const call of Object.values(s.calls)) for (let i = 0; i < compileCalls; ++i) call();
for (const op of Object.keys(sides[0].calls)) {
  const times = sides.map(() => []);
  for (let i = 0; i < runs; ++i) {
    // Each side first in every other round.
    for (const k of i % 2 === 0 ? sides.keys() : [...sides.keys()].reverse()) {
      const s = sides[k];
      s.calls[op]();
      s.native.triadSeconds(ta, tb, tc);
      const until = performance.now() + 0.3;
      while (performance.now() < until);
      const t0 = process.hrtime.bigint();
      s.calls[op]();
      times[k].push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
  }
  const text = sides.map((s, k) => `${s.name} ${median(times[k]).toFixed(1)} us`).join(', ');
  const ratio = sides.length === 2 ? `; this/other ${(median(times[0]) / median(times[1])).toFixed(3)}` : '';
  console.log(`${op}: ${text}${ratio}`);
}
