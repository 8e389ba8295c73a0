// A worker_threads body for test/concurrency.test.ts: loads the compiled package (dist/) in this
// worker's own Node environment, sets its thread count (a process-wide setting that the other
// workers change at the same time), runs the workload synchronously and as Async calls all in
// flight, and posts the digests back. With `inFlightOnly` it starts Async work and reports
// that it did, so that the parent can terminate it mid-flight.
'use strict';
const { parentPort, workerData } = require('node:worker_threads');

const rl = require(workerData.dist);
const workload = require('./workload.js');

async function main() {
  const d = workload.inputs(rl);
  if (workerData.inFlightOnly) {
    for (let k = 0; k < 8; ++k) for (const [, run] of workload.cases) run(rl, d, true);
    parentPort.postMessage({ started: true });
    return;
  }
  rl.setNumThreads(workerData.threads);
  const sync = workload.runSync(rl, d);
  const async = await workload.runAsyncAllAtOnce(rl, 2, d);
  parentPort.postMessage({ sync, async });
}

main().catch((e) => parentPort.postMessage({ error: String(e && e.stack ? e.stack : e) }));
