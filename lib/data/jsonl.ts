// Preference pairs from JSON Lines in TRL's layout: one object per line with `chosen` and
// `rejected` (and optionally `prompt` and `margin`), each text either a string ("standard") or
// a list of { role, content } messages ("conversational", whose contents are joined by newlines).
import * as fs from 'node:fs';

import { RlhfError, describe, typeError } from '../errors';

export interface PreferencePair {
  prompt: string;
  chosen: string;
  rejected: string;
  /** How much better `chosen` is: the loss asks rc - rr to exceed it (SEMANTICS §7). */
  margin?: number;
}

/** A message list's contents joined by newlines, the string itself, or null for anything else. */
function textOf(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) return null;
  const parts: string[] = [];
  for (const m of v) {
    if (m === null || typeof m !== 'object' || typeof (m as { content?: unknown }).content !== 'string') return null;
    parts.push((m as { content: string }).content);
  }
  return parts.join('\n');
}

/**
 * The pair a parsed row describes, or what is wrong with it (a phrase that follows the row's
 * name: "has no `chosen`"). Shared with callers that pass pairs in memory.
 */
export function pairFrom(row: unknown): PreferencePair | string {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) return `is ${describe(row)}, not an object`;
  const r = row as Record<string, unknown>;
  const texts: Record<'prompt' | 'chosen' | 'rejected', string> = { prompt: '', chosen: '', rejected: '' };
  for (const key of ['prompt', 'chosen', 'rejected'] as const) {
    if (r[key] === undefined) {
      if (key === 'prompt') continue;  // TRL's "implicit prompt" layout: the prompt is inside both texts
      return `has no \`${key}\``;
    }
    const text = textOf(r[key]);
    if (text === null) return `has a \`${key}\` that is not a string or a list of { role, content } messages (${describe(r[key])})`;
    texts[key] = text;
  }
  const pair: PreferencePair = texts;
  if (r.margin !== undefined) {
    if (typeof r.margin !== 'number' || !Number.isFinite(r.margin)) return `has a \`margin\` that is not a finite number (${describe(r.margin)})`;
    pair.margin = r.margin;
  }
  return pair;
}

/** One line's pair, or what is wrong with it. */
function parseLine(line: string): PreferencePair | string {
  let row: unknown;
  try {
    row = JSON.parse(line);
  } catch (e) {
    return `is not JSON (${(e as Error).message})`;
  }
  return pairFrom(row);
}

/**
 * Every pair of a JSONL file, in order; blank lines are skipped. A line that is no pair is an
 * RlhfError E_FORMAT naming the file, the 1-based line and what is wrong; an unreadable file
 * is E_IO.
 */
export function readPreferences(path: string): PreferencePair[] {
  const op = 'readPreferences';
  if (typeof path !== 'string') throw typeError(op, 'path', 'a path', path);
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new RlhfError('E_IO', `${op}: cannot read '${path}': ${(e as Error).message}`);
  }
  const pairs: PreferencePair[] = [];
  // A byte-order mark some editors write would otherwise make line 1 "not JSON".
  text.replace(/^\uFEFF/, '').split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const pair = parseLine(line);
    if (typeof pair === 'string') throw new RlhfError('E_FORMAT', `${op}: line ${i + 1} of '${path}' ${pair}`);
    pairs.push(pair);
  });
  return pairs;
}
