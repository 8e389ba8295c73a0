// Runs the native conformance harness (build/rlhf_native_tests: every op's optimised CPU kernel
// and, where built, CUDA kernel against the scalar C++ reference) and checks its verdict.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import t from 'tap';

const root = path.resolve(__dirname, '..');
// cmake-js builds executables in build/ (Makefiles) or build/Release/ (multi-config generators).
const candidates = ['build/rlhf_native_tests', 'build/Release/rlhf_native_tests', 'build/Release/rlhf_native_tests.exe']
  .map((p) => path.join(root, p));
const exe = candidates.find((p) => fs.existsSync(p));

t.test('the native conformance executable exits 0 and reports "N passed, 0 failed"', {
  skip: exe === undefined ? `rlhf_native_tests not built (looked for ${candidates.join(', ')}); run \`npm run build\`` : false,
}, async (t) => {
  const r = spawnSync(exe as string, [], { cwd: root, encoding: 'utf8', timeout: 100_000, maxBuffer: 64 * 1024 * 1024 });
  t.equal(r.error, undefined, 'the executable ran');
  t.equal(r.signal, null, 'it was not killed by a signal');
  const lines = (r.stdout ?? '').trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  const m = /^(\d+) passed, (\d+) failed$/.exec(last.trim());
  t.ok(m !== null, `the last line is the verdict: ${JSON.stringify(last)}`);
  if (m !== null) {
    t.ok(Number(m[1]) > 0, `${m[1]} checks passed`);
    t.equal(Number(m[2]), 0, 'no check failed');
  }
  const failures = lines.filter((l) => /FAIL/i.test(l) && !/0 failed/.test(l)).slice(0, 20);
  t.equal(r.status, 0, `exit status 0${failures.length ? `; failures:\n${failures.join('\n')}` : ''}${r.stderr ? `\nstderr: ${r.stderr.slice(-2000)}` : ''}`);
});
