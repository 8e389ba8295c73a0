// The benchmark's bandwidth: the triad it runs between the runs of a memory-bound op, over more
// than the caches hold, and the rows set against it (README "Benchmark").
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';

import { benchOpNames, checkBenchOps, runBench } from '../lib/cli/bench';
import * as rl from '../lib/index';
import { native } from '../lib/native';
import { expectError } from './helpers/index';

t.test('triadSeconds runs a = b + 3c once and returns its seconds', async (t) => {
  const n = (1 << 16) + 5;
  const a = new Float32Array(n);
  const b = Float32Array.from({ length: n }, (_, i) => i % 7);
  const c = Float32Array.from({ length: n }, (_, i) => (i % 5) * 0.5);
  const s = native().triadSeconds(a, b, c);
  t.ok(Number.isFinite(s) && s > 0, `seconds ${s}`);
  let wrong = 0;
  for (let i = 0; i < n; ++i) if (a[i] !== Math.fround(b[i] + Math.fround(3 * c[i]))) ++wrong;
  t.equal(wrong, 0, 'every element is b + 3c');
});

t.test('readSeconds reads a Float32Array once, on every thread count, and rejects anything else', async (t) => {
  const x = new Float32Array((1 << 18) + 3).fill(1);
  const before = rl.getNumThreads();
  t.teardown(() => rl.setNumThreads(before));
  for (const threads of [1, 2]) {
    rl.setNumThreads(threads);
    const s = native().readSeconds(x);
    t.ok(Number.isFinite(s) && s > 0, `${threads} thread(s): seconds ${s}`);
  }
  t.ok(native().readSeconds(new Float32Array(0)) >= 0, 'an empty array');
  expectError(t, () => native().readSeconds(new Int32Array(8) as unknown as Float32Array), TypeError, /readSeconds.*`x`/);
});

t.test('triadSeconds rejects what is not three Float32Arrays of one length', async (t) => {
  const f = new Float32Array(8);
  expectError(t, () => native().triadSeconds(f, new Int32Array(8) as unknown as Float32Array, f), TypeError, /`b`/);
  expectError(t, () => native().triadSeconds(f, f, new Float32Array(9)), RangeError, /`c`/);
});

// The largest cache sysfs lists for cpu0, in bytes (0 where there is no such listing).
function largestCacheBytes(): number {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  if (!fs.existsSync(dir)) return 0;
  let largest = 0;
  for (const index of fs.readdirSync(dir).filter((d) => d.startsWith('index'))) {
    const size = fs.readFileSync(path.join(dir, index, 'size'), 'utf8').trim();
    const m = /^(\d+)([KMG]?)$/.exec(size);
    if (m) largest = Math.max(largest, Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2] as '' | 'K' | 'M' | 'G']);
  }
  return largest;
}

t.test('the triad measures memory: its arrays together at least twice the largest cache', async (t) => {
  const elements = native().memoryTriadElements();
  t.ok(Number.isInteger(elements) && elements >= 1 << 24, `${elements} elements an array`);
  const cache = largestCacheBytes();
  if (cache > 0) t.ok(12 * elements >= 2 * cache, `${12 * elements} bytes against a ${cache}-byte cache`);
});

t.test('a memory-bound row is set against the triads run between its own runs', async (t) => {
  const report = runBench({ ops: ['maskedMean'], backends: ['cpu'], minSeconds: 0.05 });
  t.equal(report.rows.length, 1);
  const row = report.rows[0];
  t.ok(row.bandwidthGBs !== undefined && row.bandwidthGBs > 0, `paired bandwidth ${row.bandwidthGBs}`);
  t.ok(Math.abs(row.pctOfBandwidth - (100 * row.gbPerS) / (row.bandwidthGBs ?? NaN)) < 1e-9, 'share of the paired triad');
  // maskedMean only reads: it is also set against passes that only read, run between its runs.
  t.ok(row.readBandwidthGBs !== undefined && row.readBandwidthGBs > 0, `paired read bandwidth ${row.readBandwidthGBs}`);
  t.ok(Math.abs((row.pctOfReadBandwidth ?? NaN) - (100 * row.gbPerS) / (row.readBandwidthGBs ?? NaN)) < 1e-9,
    'share of the paired read passes');
  t.equal(report.cpu, os.cpus()[0]?.model.trim() ?? 'unknown', `the report names the CPU: ${report.cpu}`);
  const small = runBench({ ops: ['gae'], backends: ['cpu'], quick: true, minSeconds: 0.01 });
  for (const r of small.rows) {
    t.equal(r.bandwidthGBs, undefined, `${r.shape}: in cache, no paired triad`);
    t.equal(r.readBandwidthGBs, undefined, `${r.shape}: in cache, no read pass`);
    t.ok(Math.abs(r.pctOfBandwidth - (100 * r.gbPerS) / small.bandwidthGBs) < 1e-9, `${r.shape}: share of the run's triad`);
  }
});

t.test('--op names every family the bench has, and an unknown one is an error naming them', async (t) => {
  const names = benchOpNames();
  t.ok(names.includes('ppoPolicyLoss+valueLoss') && names.includes('matmul') && names.includes('gae'), names.join(', '));
  t.doesNotThrow(() => checkBenchOps(['gae', 'dpoLoss ipo', 'tokenGae skip']));
  expectError(t, () => checkBenchOps(['gae', 'dpoLos']), RangeError, /unknown op 'dpoLos'; expected one of gae, tokenGae/);
});

// The command runs from dist/, built by `npm install` (or npx tsc -p tsconfig.json).
const cli = path.join(__dirname, '..', 'dist', 'cli', 'rlhf.js');
t.test('rlhf bench --help lists every op; --op with an unknown name fails naming it', { skip: fs.existsSync(cli) ? false : 'dist/cli/rlhf.js not built' }, async (t) => {
  const help = spawnSync(process.execPath, [cli, 'bench', '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  for (const n of benchOpNames()) t.match(help.stdout, n, `--help lists ${n}`);
  const bad = spawnSync(process.execPath, [cli, 'bench', '--op', 'nope'], { encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /rlhf bench: unknown op 'nope'/);
});

// scripts/ab-bench.js against a copy of this checkout's dist/ and addon: both sides load and run
// each case, and the script refuses what would time one addon against itself.
const abBench = path.join(__dirname, '..', 'scripts', 'ab-bench.js');
const addon = path.join(__dirname, '..', 'build', 'Release', 'rlhf.node');
const built = fs.existsSync(cli) && fs.existsSync(addon) ? false : 'dist/ or the cmake-js addon not built';

// Another checkout as the scripts take one: this one's dist/ and addon, copied.
function copyOfThisCheckout(t: { teardown(fn: () => void): void }): string {
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-ab-'));
  t.teardown(() => fs.rmSync(other, { recursive: true, force: true }));
  fs.cpSync(path.join(__dirname, '..', 'dist'), path.join(other, 'dist'), { recursive: true });
  fs.mkdirSync(path.join(other, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(addon, path.join(other, 'build', 'Release', 'rlhf.node'));
  fs.symlinkSync(path.join(__dirname, '..', 'node_modules'), path.join(other, 'node_modules'));
  return other;
}

t.test('scripts/ab-bench.js times two checkouts in turns, and refuses one against itself', { skip: built }, async (t) => {
  const run = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
    spawnSync(process.execPath, [abBench, ...args], { encoding: 'utf8', env });
  const missing = run([]);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /--tree DIR .* is required/);
  const self = run(['--tree', path.join(__dirname, '..')]);
  t.equal(self.status, 2);
  t.match(self.stderr, /--tree is this checkout/);
  const forced = run(['--tree', os.tmpdir()], { ...process.env, RLHF_ADDON_PATH: addon });
  t.equal(forced.status, 2);
  t.match(forced.stderr, /unset RLHF_ADDON_PATH/);

  const ab = run(['--tree', copyOfThisCheckout(t), '--op', 'gae', '--runs', '3']);
  t.equal(ab.status, 0, ab.stderr);
  t.match(ab.stdout, /^gae \[T=1024,N=4096\]: new [\d.]+ us \([\d.]+% of its triads\), old [\d.]+ us \([\d.]+% of its triads\); new\/old [\d.]+$/m);
  t.match(ab.stdout, /^gae \[T=128,N=1\]: new [\d.]+ us, old [\d.]+ us; new\/old [\d.]+$/m);
});

// scripts/cold-calls.js: one checkout alone, then this one and a copy in turns.
t.test('scripts/cold-calls.js times calls made with cold caches, of one checkout or two in turns', { skip: built }, async (t) => {
  const run = (args: string[]) => spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'cold-calls.js'), ...args],
    { encoding: 'utf8' });
  const alone = run(['--runs', '3', '--compile', '5']);
  t.equal(alone.status, 0, alone.stderr);
  t.match(alone.stdout, /^pairwiseRewardLoss \[1024\]: this [\d.]+ us$/m);
  t.equal(alone.stdout.trim().split('\n').length, 4, 'four ops');
  const two = run(['--tree', copyOfThisCheckout(t), '--runs', '3', '--compile', '0']);
  t.equal(two.status, 0, two.stderr);
  t.match(two.stdout, /^ppoPolicyLoss \[1,1024\]: this [\d.]+ us, other [\d.]+ us; this\/other [\d.]+$/m);
});
