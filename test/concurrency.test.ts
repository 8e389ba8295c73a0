// Concurrency (issue 7): many ...Async calls in flight at once give the bits of the sequential
// calls; the addon loads and computes in several worker_threads at once, each its own Node
// environment, while they all change the process-wide thread count; a worker terminated with work
// in flight, or a process that exits with work in flight, neither hangs nor crashes.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import t from 'tap';

import * as rl from '../lib/index';
import { withThreads } from './helpers/index';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const workload = require('./helpers/workload.js') as {
  cases: [string, unknown][];
  inputs(r: typeof rl): object;
  runSync(r: typeof rl, d?: object): Record<string, string>;
  runAsyncAllAtOnce(r: typeof rl, copies: number, d?: object): Promise<Record<string, string[]>>;
  differing(first: Record<string, string>, other: Record<string, string>): string[];
  mismatches(sync: Record<string, string>, async: Record<string, string[]>): string[];
};
const { differing, mismatches } = workload;

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist', 'index.js');
const workerScript = path.join(__dirname, 'helpers', 'workload-worker.js');
const skipDist = fs.existsSync(dist) ? false : 'dist/ is not built (npx tsc -p tsconfig.json)';

t.test('many Async calls in flight at once give the bits of the sequential calls', async (t) => {
  const d = workload.inputs(rl);
  const sync = workload.runSync(rl, d);
  const copies = 6;
  const async = await workload.runAsyncAllAtOnce(rl, copies, d);
  t.equal(Object.keys(async).length, workload.cases.length, `${copies * workload.cases.length} calls in flight over ${workload.cases.length} ops`);
  t.same(mismatches(sync, async), [], 'every copy of every op matches');
});

t.test('changing the thread count while Async calls run changes no bit', async (t) => {
  const d = workload.inputs(rl);
  const sync = workload.runSync(rl, d);
  const before = rl.getNumThreads();
  try {
    const pending = workload.runAsyncAllAtOnce(rl, 4, d);
    for (const n of [3, 1, 5, 2]) {
      rl.setNumThreads(n);
      await new Promise((resolve) => setImmediate(resolve));
    }
    t.same(mismatches(sync, await pending), [], 'every result matches');
  } finally {
    rl.setNumThreads(before);
  }
});

interface WorkerReport { sync?: Record<string, string>; async?: Record<string, string[]>; started?: boolean; error?: string }

function startWorker(data: object): { worker: Worker; report: Promise<WorkerReport>; exit: Promise<number> } {
  const worker = new Worker(workerScript, { workerData: { dist, ...data } });
  const report = new Promise<WorkerReport>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, report, exit };
}

t.test('the addon loads and computes in four worker_threads at once', { skip: skipDist }, async (t) => {
  const main = withThreads(1, () => workload.runSync(rl));
  const before = rl.getNumThreads();
  try {
    const workers = [1, 2, 3, 4].map((threads) => startWorker({ threads }));
    const reports = await Promise.all(workers.map((w) => w.report));
    reports.forEach((r, i) => {
      t.equal(r.error, undefined, `worker ${i}: no error`);
      t.same(differing(main, r.sync ?? {}), [], `worker ${i}: its sequential calls match the main thread's`);
      t.same(mismatches(main, r.async ?? {}), [], `worker ${i}: its Async calls match the main thread's`);
    });
    const codes = await Promise.all(workers.map((w) => w.exit));
    t.same(codes, [0, 0, 0, 0], 'every worker exits with 0');
  } finally {
    rl.setNumThreads(before);
  }
  t.same(differing(main, workload.runSync(rl)), [], 'the main thread still computes the same bits after the workers are gone');
});

t.test('a worker terminated with Async work in flight leaves the process working', { skip: skipDist }, async (t) => {
  const main = workload.runSync(rl);
  for (let k = 0; k < 3; ++k) {
    const w = startWorker({ inFlightOnly: true });
    t.same(await w.report, { started: true }, `round ${k}: the worker started ${8 * workload.cases.length} Async calls`);
    await w.worker.terminate();
    t.equal(await w.exit, 1, `round ${k}: terminate() ended it (exit code 1)`);
  }
  t.same(differing(main, workload.runSync(rl)), [], 'the main thread computes the same bits afterwards');
  t.same(mismatches(main, await workload.runAsyncAllAtOnce(rl, 2)), [], 'and its Async calls too');
});

t.test('workers terminated mid-call, 40 times at varied moments, leave their parent running', { skip: skipDist }, async (t) => {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'helpers', 'terminate-workers.js'), '40'],
    { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.error, undefined, 'it ended within the timeout');
  t.equal(r.signal, null, `no signal (an error escaping the addon in a terminating worker aborts the process)${r.stderr ? `; stderr: ${r.stderr}` : ''}`);
  t.equal(r.status, 0, 'exit code 0');
  t.same(JSON.parse(r.stdout.trim() || 'null'), { rounds: 40, terminated: 40 }, 'every worker ended by terminate() (exit code 1)');
});

// A child that starts heavy Async work and exits while it runs: from the main thread after
// `delayMs`, from inside a worker, or by an uncaught exception.
function exitInFlight(how: 'main' | 'worker' | 'throw', delayMs: number): ReturnType<typeof spawnSync> {
  const script = `
    const rl = require(${JSON.stringify(dist)});
    const { Worker, isMainThread } = require('node:worker_threads');
    const heavy = () => {
      const a = rl.tensor(new Float32Array(384 * 384).fill(0.5), [384, 384]);
      const x = rl.tensor(new Float32Array(1 << 21).fill(1.5), [1 << 21]);
      for (let k = 0; k < 24; ++k) { rl.matmulAsync(a, a); rl.maskedWhitenAsync(x); }
    };
    heavy();
    if (${JSON.stringify(how)} === 'worker') {
      new Worker(${JSON.stringify(`const rl = require(${JSON.stringify(dist)});
        const a = rl.tensor(new Float32Array(384 * 384).fill(0.5), [384, 384]);
        for (let k = 0; k < 24; ++k) rl.matmulAsync(a, a);
        setTimeout(() => process.exit(0), ${delayMs});`)}, { eval: true });
      setTimeout(() => process.exit(0), ${delayMs} + 50);
    } else if (${JSON.stringify(how)} === 'throw') {
      setTimeout(() => { throw new Error('deliberate'); }, ${delayMs});
    } else {
      setTimeout(() => process.exit(0), ${delayMs});
    }`;
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
}

t.test('a process that ran sync and Async work exits on its own: nothing it left keeps it alive', { skip: skipDist }, async (t) => {
  const script = `
    const rl = require(${JSON.stringify(dist)});
    const workload = require(${JSON.stringify(path.join(__dirname, 'helpers', 'workload.js'))});
    workload.runSync(rl);
    workload.runAsyncAllAtOnce(rl, 2).then(() => {
      // The stdio pipes to the parent are the child's own; anything else would be ours.
      const left = process.getActiveResourcesInfo().filter((r) => r !== 'PipeWrap' && r !== 'TTYWrap');
      setImmediate(() => console.log(JSON.stringify(left)));
    });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.error, undefined, 'it ended within the timeout');
  t.equal(r.status, 0, `exit code 0${r.stderr ? `; stderr: ${r.stderr}` : ''}`);
  t.same(JSON.parse(r.stdout.trim() || 'null'), [], 'no handle or request is active once the work has settled');
});

t.test('a process exiting with Async work in flight neither hangs nor crashes', { skip: skipDist }, async (t) => {
  for (const delayMs of [0, 3, 20]) {
    const r = exitInFlight('main', delayMs);
    t.equal(r.error, undefined, `process.exit after ${delayMs} ms: finished within the timeout`);
    t.equal(r.signal, null, `process.exit after ${delayMs} ms: no signal`);
    t.equal(r.status, 0, `process.exit after ${delayMs} ms: exit code 0${r.stderr ? `; stderr: ${r.stderr}` : ''}`);
  }
  const w = exitInFlight('worker', 5);
  t.equal(w.signal, null, 'process.exit in a worker with work in flight: no signal');
  t.equal(w.status, 0, `then the main thread exits with 0${w.stderr ? `; stderr: ${w.stderr}` : ''}`);
  const e = exitInFlight('throw', 5);
  t.equal(e.signal, null, 'an uncaught exception with work in flight: no signal');
  t.equal(e.status, 1, 'exit code 1 as for any uncaught exception');
  t.match(e.stderr, /deliberate/, 'and the exception is what is reported');
});
