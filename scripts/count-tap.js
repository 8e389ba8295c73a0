#!/usr/bin/env node
// Counts the leaf test points of a TAP stream (tap --reporter=tap): prints "passed failed skipped".
// A point is a leaf when the line before it is not more indented (a subtest's summary follows
// its indented children). A test file that crashed ends in a top-level "not ok" whose children
// may all have passed; it is counted as one more failure, which tap's own closing summary
// would not show.
'use strict';
const fs = require('node:fs');

const lines = fs.readFileSync(process.argv[2], 'utf8').split('\n');
let passed = 0;
let failed = 0;
let skipped = 0;
let failedInFile = 0;
let prevIndent = -1;
for (const line of lines) {
  if (line.trim() === '') continue;
  const indent = line.length - line.trimStart().length;
  const m = /^\s*(not ok|ok)\b/.exec(line);
  if (m) {
    const leaf = !(prevIndent > indent);
    if (leaf && /# SKIP/i.test(line)) skipped += 1;
    else if (leaf && m[1] === 'ok') passed += 1;
    else if (leaf && !/# TODO/i.test(line)) {
      failed += 1;
      failedInFile += 1;
    }
    if (indent === 0) {
      if (m[1] === 'not ok' && failedInFile === 0 && !leaf) failed += 1;
      failedInFile = 0;
    }
  }
  prevIndent = indent;
}
console.log(`${passed} ${failed} ${skipped}`);
