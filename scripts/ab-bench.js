#!/usr/bin/env node
// Times the CPU bench cases of this checkout and of another one (an older commit, with its own
// built addon and dist/) in one process, call by call in turns, and prints each side's median and
// their ratio. Differences of a few percent show only this way: the memory of a shared machine
// swings by a third within minutes (CONTRIBUTING, "Fast chunk kernels"). The two traps of two
// addons in one process are handled here: each side's addon is loaded from its own tree at once,
// and each timed call comes 300 us after the other side's last call, when that side's pool has
// stopped spinning (100 us after a call), and right after a call on its own side: a triad on its
// own pool for a memory-bound case (8 MiB of traffic or more; it also leaves none of the case's
// data in the cache, as in the bench, and the case's share is of these triads), the case itself
// otherwise (warm, as back-to-back calls are in the bench). The wait spins rather than sleeps, so
// that the core does not go idle between calls, on a clock that allocates nothing.
//   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && npm ci && npm run build)
//   node scripts/ab-bench.js --tree /tmp/old [--op NAME[,NAME]] [--runs N] [--threads N]
// (--runs: the fewest rounds of one call a side, 15 by default; rounds go on for a second.)
'use strict';
const fs = require('node:fs');
const path = require('node:path');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function fail(message) {
  console.error(`ab-bench: ${message}`);
  process.exit(2);
}

const here = path.resolve(__dirname, '..');
const other = arg('tree');
if (other === undefined) fail('--tree DIR (the other checkout, built) is required');
if (process.env.RLHF_ADDON_PATH) fail('unset RLHF_ADDON_PATH: with it both sides would load the one addon');
const ops = (arg('op', 'gae') || '').split(',').filter((s) => s.length > 0);
const runs = Number(arg('runs', 15));
const threads = Number(arg('threads', 0));
const kPairedBytes = 8 * 1024 * 1024;

// One side: its library, bench cases and addon, the addon loaded now (it loads on first use).
function side(name, tree) {
  const root = fs.realpathSync(path.resolve(tree));
  const dist = path.join(root, 'dist');
  if (!fs.existsSync(path.join(dist, 'cli', 'bench.js'))) fail(`${root} has no dist/cli/bench.js: build it first`);
  const rl = require(path.join(dist, 'index.js'));
  const native = require(path.join(dist, 'native.js')).native();
  rl.backends();
  if (threads > 0) rl.setNumThreads(threads);
  return { name, root, rl, native, cases: require(path.join(dist, 'cli', 'bench.js')).benchCases(false) };
}

const sides = [side('new', here), side('old', other)];
if (sides[0].root === sides[1].root) fail('--tree is this checkout');

const triadElements = sides[0].native.memoryTriadElements();
const ta = new Float32Array(triadElements);
const tb = new Float32Array(triadElements).fill(1);
const tc = new Float32Array(triadElements).fill(2);
const median = (xs) => [...xs].sort((p, q) => p - q)[xs.length >> 1];
const wanted = (family, c) => ops.some((o) => o === family || c.op === o || c.op.startsWith(`${o} `));

function measure(r, paired) {
  const until = performance.now() + 0.3;
  while (performance.now() < until);
  if (paired) r.triads.push(r.native.triadSeconds(ta, tb, tc));
  else r.fn();
  const t0 = process.hrtime.bigint();
  r.fn();
  r.times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}

// Calls fn until 0.2 s or 2000 calls have passed: the library's JavaScript is compiled by then
// (after one call, a 1 us case took 3.9 us in the interpreter).
function warmUp(fn) {
  const until = performance.now() + 200;
  for (let i = 0; i < 2000 && performance.now() < until; ++i) fn();
}

for (const [family, make] of sides[0].cases) {
  if (!ops.includes(family) && !ops.some((o) => o.startsWith(`${family} `))) continue;
  const mine = make();
  if (!wanted(family, mine)) continue;
  const theirs = sides[1].cases.filter(([f]) => f === family).map(([, m]) => m()).find((c) => c.op === mine.op && c.shape === mine.shape);
  if (theirs === undefined) {
    console.log(`${mine.op} ${mine.shape}: not in ${sides[1].root}`);
    continue;
  }
  const paired = mine.bytes >= kPairedBytes;
  const runners = [mine, theirs].map((c, k) => ({ ...sides[k], fn: c.prepare('cpu', 'cpu'), times: [], triads: [] }));
  for (const r of runners) warmUp(r.fn);
  // At least `runs` rounds, and more for a second (small cases need many: 5000 at most).
  const start = performance.now();
  for (let i = 0; i < 5000 && (i < runs || performance.now() - start < 1000); ++i) {
    // Each side first in every other round.
    for (const r of i % 2 === 0 ? runners : [...runners].reverse()) measure(r, paired);
  }
  const text = runners.map((r) => {
    const s = median(r.times);
    const share = paired ? ` (${((mine.bytes / s) / (12 * triadElements / median(r.triads)) * 100).toFixed(1)}% of its triads)` : '';
    return `${r.name} ${(s * 1e6).toFixed(1)} us${share}`;
  });
  const ratio = median(runners[0].times) / median(runners[1].times);
  console.log(`${mine.op} ${mine.shape}: ${text.join(', ')}; new/old ${ratio.toFixed(3)}`);
}
