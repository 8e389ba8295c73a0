#!/usr/bin/env node
// `npm install` entry: builds the native addon, then compiles the TypeScript in lib/ to dist/
// when the compiler is present (a development checkout; a published package ships dist/).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function run(args) {
  const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root, env: process.env });
  if (r.status !== 0) process.exit(r.status === null ? 1 : r.status);
}

run([path.join(__dirname, 'build-native.js')]);

let tsc = null;
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
} catch {
  tsc = null;
}
if (tsc && fs.existsSync(path.join(root, 'tsconfig.json'))) run([tsc, '-p', path.join(root, 'tsconfig.json')]);
