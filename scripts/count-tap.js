#!/usr/bin/env node
// Counts the leaf test points of a TAP stream (tap --reporter=tap): prints "passed failed".
// A point is a leaf when the line before it is not more indented (a subtest's summary follows
// its indented children). A file that crashed shows as a top-level "not ok" with no children,
// so it is counted as a failure, which tap's own closing summary would not show.
'use strict';
const fs = require('node:fs');

const lines = fs.readFileSync(process.argv[2], 'utf8').split('\n');
let passed = 0;
let failed = 0;
let prevIndent = -1;
for (const line of lines) {
  if (line.trim() === '') continue;
  const indent = line.length - line.trimStart().length;
  const m = /^\s*(not ok|ok)\b/.exec(line);
  if (m && !(prevIndent > indent)) {
    if (m[1] === 'ok') passed += 1;
    else if (!/# TODO/.test(line)) failed += 1;
  }
  prevIndent = indent;
}
console.log(`${passed} ${failed}`);
