#!/usr/bin/env node
// Builds the addon with cmake-js into build/ and records what was built in
// build/rlhf-build.json (read by rl.buildInfo()).
//   RLHF_CUDA unset/auto: CUDA when nvcc is found; if that build fails, say so and build CPU-only.
//   RLHF_CUDA=1: CUDA or fail loudly.   RLHF_CUDA=0: CPU-only.
// Nothing is downloaded: package.json `binary.napi_versions` makes cmake-js use the
// node-api-headers package instead of fetching Node's headers.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build');

function cudaRequest() {
  const raw = (process.env.RLHF_CUDA || 'auto').trim().toLowerCase();
  if (['1', 'on', 'true', 'yes'].includes(raw)) return 'ON';
  if (['0', 'off', 'false', 'no'].includes(raw)) return 'OFF';
  if (raw === 'auto' || raw === '') return 'AUTO';
  console.error(`rlhf-node: RLHF_CUDA must be 1, 0 or auto, not '${process.env.RLHF_CUDA}'`);
  process.exit(1);
}

function cmakeJs(args) {
  const bin = require.resolve('cmake-js/bin/cmake-js');
  const jobs = String(Math.max(1, os.availableParallelism ? os.availableParallelism() : os.cpus().length));
  const r = spawnSync(process.execPath, [bin, ...args, '-d', root, '-O', buildDir, '--parallel', jobs, '--prefer-make'],
    { stdio: 'inherit', env: process.env });
  return r.status === 0;
}

function build(cuda) {
  fs.rmSync(buildDir, { recursive: true, force: true });
  return cmakeJs(['rebuild', `--CDRLHF_CUDA=${cuda}`]);
}

function cudaWasBuilt() {
  const cache = path.join(buildDir, 'CMakeCache.txt');
  return fs.existsSync(cache) && /CMAKE_CUDA_COMPILER:\w+=\//.test(fs.readFileSync(cache, 'utf8'));
}

function main() {
  const request = cudaRequest();
  let fallback = null;
  let ok = build(request);
  if (!ok && request === 'AUTO' && cudaWasBuilt()) {
    fallback = 'the automatic CUDA build failed (see the compiler output above); built CPU-only instead';
    console.error(`\nrlhf-node: ${fallback}. Set RLHF_CUDA=1 to make that an error, RLHF_CUDA=0 to skip CUDA.\n`);
    ok = build('OFF');
  }
  if (!ok) {
    console.error('rlhf-node: the native build failed. It needs cmake >= 3.18 and a C++17 compiler' +
      (request === 'ON' ? ', and with RLHF_CUDA=1 a working nvcc' : '') + '.');
    process.exit(1);
  }
  const record = { cudaRequest: request, cudaFallback: fallback, builtAt: new Date().toISOString(), builder: 'cmake-js' };
  fs.writeFileSync(path.join(buildDir, 'rlhf-build.json'), JSON.stringify(record, null, 2) + '\n');
}

main();
