// Terminates workers that keep Async calls of every op in flight, `rounds` times (argv[2], 40 by
// default), each after a delay of 0 to 12 ms while the worker is busy starting more, and prints
// how many ended with exit code 1 as terminate() should. Run as a child by
// test/concurrency.test.ts: a terminated environment whose errors escape the addon aborts the
// whole process, which the parent then sees as a signal. Alone, with more rounds, it is a soak:
//   node test/helpers/terminate-workers.js 500
'use strict';
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const dist = path.resolve(__dirname, '..', '..', 'dist', 'index.js');
const rounds = Number(process.argv[2] || 40);

async function main() {
  let terminated = 0;
  for (let k = 0; k < rounds; ++k) {
    const worker = new Worker(path.join(__dirname, 'workload-worker.js'), { workerData: { dist, inFlightOnly: true } });
    const started = new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const exit = new Promise((resolve) => worker.once('exit', resolve));
    await started;
    await new Promise((resolve) => setTimeout(resolve, k % 13));
    await worker.terminate();
    if ((await exit) === 1) ++terminated;
  }
  console.log(JSON.stringify({ rounds, terminated }));
}

main();
