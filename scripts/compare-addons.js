#!/usr/bin/env node
// CI check of the node-gyp mirror: the addon at RLHF_ADDON_PATH (node-gyp) must give bit-for-bit
// what the cmake-js addon in build/ gives on every op.
'use strict';
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const gypPath = process.env.RLHF_ADDON_PATH;
delete process.env.RLHF_ADDON_PATH;
const cmake = require(path.join(root, 'build', 'Release', 'rlhf.node'));
const gyp = require(gypPath);

function random(n, seed) {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; ++i) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = s / 2147483648 - 0.5;
  }
  return a;
}

const T = 64, N = 37, n = T * N;
const r = random(n, 1), v = random(n, 2), last = random(N, 3);
const term = new Uint8Array(n).map((_, i) => (i % 11 === 0 ? 1 : 0));
const mask = new Uint8Array(n).map((_, i) => (i % 7 === 0 ? 0 : 1));
const results = [];
for (const addon of [cmake, gyp]) {
  const out = [new Float32Array(n), new Float32Array(n), new Float32Array(n), new Float32Array(n), new Float32Array(n), new Float32Array(n)];
  addon.gae(T, N, r, v, null, last, term, null, null, null, 0.99, 0.95, out[0], out[1], false);
  addon.tokenGae(T, N, r, v, mask, null, 1, 0.95, 1, out[2], out[3], false);
  addon.discountedReturns(T, N, r, mask, 0.97, out[4], false);
  addon.maskedWhiten(r, mask, 0, true, true, 1e-8, out[5], false);
  results.push({ out, mean: addon.maskedMean(r, mask, false), variance: addon.maskedVar(r, mask, true, false) });
}
const [a, b] = results;
const same = a.out.every((x, k) => Buffer.compare(Buffer.from(x.buffer), Buffer.from(b.out[k].buffer)) === 0) &&
  a.mean === b.mean && a.variance === b.variance;
console.log(same ? 'node-gyp and cmake-js addons agree bit for bit' : 'node-gyp and cmake-js addons DIFFER');
process.exit(same ? 0 : 1);
