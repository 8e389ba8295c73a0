// Determinism (issue 7): every op, and a training step of two models, gives bit-identical
// results for the same input on any number of threads (more than there are cores too), on each
// CPU path (the active variant, AVX2 beside it where that is AVX-512, the SSE2 baseline, the
// scalar reference), and run after run; on a GPU, run after run. The workload is shared with
// test/concurrency.test.ts.
import t from 'tap';

import * as rl from '../lib/index';
import { cpuPaths, hasCuda, withCpuPath, withThreads } from './helpers/index';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const workload = require('./helpers/workload.js') as {
  inputs(r: typeof rl, device?: string): object;
  runSync(r: typeof rl, d?: object): Record<string, string>;
  differing(first: Record<string, string>, other: Record<string, string>): string[];
};
const { differing } = workload;

const threadCounts = [1, 2, 3, 5, 16];

for (const path of cpuPaths) {
  t.test(`CPU path '${path}': the same bits on ${threadCounts.join(', ')} threads and on a repeat`, async (t) => {
    withCpuPath(path, () => {
      const d = workload.inputs(rl);
      const first = withThreads(1, () => workload.runSync(rl, d));
      t.ok(Object.keys(first).length >= 24, `${Object.keys(first).length} cases`);
      for (const n of threadCounts) {
        t.same(differing(first, withThreads(n, () => workload.runSync(rl, d))), [], `${n} threads: every case matches 1 thread`);
      }
      t.same(differing(first, withThreads(3, () => workload.runSync(rl, d))), [], 'a repeat on 3 threads matches');
      t.same(differing(first, withThreads(3, () => workload.runSync(rl))), [], 'fresh copies of the inputs match');
    });
  });
}

t.test('CUDA: the same bits run after run', { skip: hasCuda() ? false : 'no CUDA device' }, async (t) => {
  const d = workload.inputs(rl, 'cuda');
  const first = workload.runSync(rl, d);
  for (let k = 0; k < 3; ++k) t.same(differing(first, workload.runSync(rl, d)), [], `repeat ${k + 1} matches`);
});
