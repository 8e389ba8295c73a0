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

/** One line's pair, or the reason it is not one. */
function parseLine(line: string): PreferencePair | string {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch (e) {
    return `not JSON (${(e as Error).message})`;
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return `expected a JSON object but found ${describe(o)}`;
  const row = o as Record<string, unknown>;
  const texts: Record<'prompt' | 'chosen' | 'rejected', string> = { prompt: '', chosen: '', rejected: '' };
  for (const key of ['prompt', 'chosen', 'rejected'] as const) {
    if (row[key] === undefined) {
      if (key === 'prompt') continue;
      return `missing \`${key}\``;
    }
    const text = textOf(row[key]);
    if (text === null) return `\`${key}\` is not a string or a list of { role, content } messages (found ${describe(row[key])})`;
    texts[key] = text;
  }
  const pair: PreferencePair = texts;
  if (row.margin !== undefined) {
    if (typeof row.margin !== 'number' || !Number.isFinite(row.margin)) return `\`margin\` is not a finite number (found ${describe(row.margin)})`;
    pair.margin = row.margin;
  }
  return pair;
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
    if (typeof pair === 'string') throw new RlhfError('E_FORMAT', `${op}: ${path}:${i + 1}: ${pair}`);
    pairs.push(pair);
  });
  return pairs;
}
