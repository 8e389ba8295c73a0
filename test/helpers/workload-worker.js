// A worker_threads body for test/concurrency.test.ts: loads the compiled package (dist/) in this
// worker's own Node environment, sets its thread count (a process-wide setting that the other
// workers change at the same time), runs the workload synchronously and as Async calls all in
// flight, and posts the digests back. With `inFlightOnly` it keeps Async work in flight (each
// Async call started again as it settles, so that the worker never runs out of work and ends on
// its own before the parent's terminate() arrives) and reports that it started, so that the
// parent can terminate it mid-flight.
'use strict';
const { parentPort, workerData } = require('node:worker_threads');

const rl = require(workerData.dist);
const workload = require('./workload.js');

async function main() {
  const d = workload.inputs(rl);
  if (workerData.inFlightOnly) {
    const again = (run) => {
      const result = run(rl, d, true);
      if (result instanceof Promise) result.then(() => again(run));
    };
    for (let k = 0; k < 8; ++k) for (const [, run] of workload.cases) again(run);
    parentPort.postMessage({ started: true });
    return;
  }
  rl.setNumThreads(workerData.threads);
  const sync = workload.runSync(rl, d);
  const async = await workload.runAsyncAllAtOnce(rl, 2, d);
  parentPort.postMessage({ sync, async });
}

main().catch((e) => parentPort.postMessage({ error: String(e && e.stack ? e.stack : e) }));
