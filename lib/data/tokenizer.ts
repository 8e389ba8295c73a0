// A small built-in tokenizer for the reward trainer's default model: a vocabulary of words (or
// characters) read from a corpus, with reserved ids for padding, unknown tokens and the end of a
// sequence. It is no substitute for a subword tokenizer; it makes a toy task trainable with no
// external files, and it round-trips through JSON so a checkpoint can carry it.
import { RlhfError, rangeError, typeError } from '../errors';
import { choice, keysOf, options } from '../validate';

export type TokenizerLevel = 'word' | 'char';

export interface TokenizerOptions {
  /** 'word' (default): lowercase, words and single punctuation marks; 'char': one token per code point. */
  level?: TokenizerLevel;
  /** The most ids in all, the three reserved ones included; default unlimited. */
  maxVocab?: number;
}

const tokenizerOptionKeys = keysOf<TokenizerOptions>({ level: true, maxVocab: true });

/** What toJSON() gives and fromJSON() takes. */
export interface TokenizerJSON {
  level: TokenizerLevel;
  /** The tokens of ids 3, 4, ... in order. */
  tokens: string[];
}

const levels: readonly TokenizerLevel[] = ['word', 'char'];
const kReserved = 3;

// Runs of letters, digits and marks form a word; any other non-space character stands alone.
const kWordPattern = /[\p{L}\p{N}\p{M}]+|[^\s\p{L}\p{N}\p{M}]/gu;

function split(text: string, level: TokenizerLevel): string[] {
  if (level === 'char') return Array.from(text);
  return text.toLowerCase().match(kWordPattern) ?? [];
}

/** Code-unit order, so that the vocabulary does not depend on the host's locale. */
function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function maxVocabOf(op: string, v: unknown): number {
  if (v === undefined) return Infinity;
  if (typeof v !== 'number') throw typeError(op, 'maxVocab', 'an integer', v);
  if (!Number.isInteger(v) || v < kReserved)
    throw rangeError(op, 'maxVocab', `must be an integer >= ${kReserved} (the reserved ids) but is ${v}`);
  return v;
}

export class SimpleTokenizer {
  static readonly PAD = 0;
  static readonly UNKNOWN = 1;
  static readonly EOS = 2;

  readonly level: TokenizerLevel;
  readonly #tokens: readonly string[];
  readonly #ids: Map<string, number>;

  /** @internal Use SimpleTokenizer.fromTexts() or SimpleTokenizer.fromJSON(). */
  constructor(level: TokenizerLevel, tokens: readonly string[]) {
    this.level = level;
    this.#tokens = Object.freeze(tokens.slice());
    this.#ids = new Map(tokens.map((tok, i) => [tok, i + kReserved]));
  }

  /**
   * The vocabulary of `texts`: every token seen, most frequent first and ties in code-unit
   * order (so the same corpus gives the same ids anywhere), cut to maxVocab ids in all.
   */
  static fromTexts(texts: readonly string[], opts: TokenizerOptions = {}): SimpleTokenizer {
    const op = 'SimpleTokenizer.fromTexts';
    if (!Array.isArray(texts)) throw typeError(op, 'texts', 'an array of strings', texts);
    const o = options<TokenizerOptions>(op, opts, tokenizerOptionKeys);
    const level = choice(op, 'level', o.level, levels, 'word');
    const maxVocab = maxVocabOf(op, o.maxVocab);
    const counts = new Map<string, number>();
    texts.forEach((text, i) => {
      if (typeof text !== 'string') throw typeError(op, `texts[${i}]`, 'a string', text);
      for (const tok of split(text, level)) counts.set(tok, (counts.get(tok) ?? 0) + 1);
    });
    const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || compareCodeUnits(a[0], b[0]));
    return new SimpleTokenizer(level, ranked.slice(0, maxVocab - kReserved).map(([tok]) => tok));
  }

  /** A tokenizer from what toJSON() gave (the object, or its JSON text). */
  static fromJSON(json: TokenizerJSON | string): SimpleTokenizer {
    const op = 'SimpleTokenizer.fromJSON';
    let o: unknown = json;
    if (typeof json === 'string') {
      try {
        o = JSON.parse(json);
      } catch {
        throw new RlhfError('E_FORMAT', `${op}: the text is not JSON`);
      }
    }
    const j = o as Partial<TokenizerJSON> | null;
    if (j === null || typeof j !== 'object' || !levels.includes(j.level as TokenizerLevel) || !Array.isArray(j.tokens) ||
        j.tokens.some((t) => typeof t !== 'string') || new Set(j.tokens).size !== j.tokens.length)
      throw new RlhfError('E_FORMAT', `${op}: expected { level: 'word' | 'char', tokens: distinct strings }`);
    return new SimpleTokenizer(j.level as TokenizerLevel, j.tokens);
  }

  /** Ids in all, the reserved ones included: the vocabSize a model over these ids needs. */
  get vocabSize(): number {
    return kReserved + this.#tokens.length;
  }

  /** The ids of `text`'s tokens (unknown ones as UNKNOWN); no end-of-sequence id is added. */
  encode(text: string): Int32Array {
    if (typeof text !== 'string') throw typeError('SimpleTokenizer.encode', 'text', 'a string', text);
    const toks = split(text, this.level);
    const ids = new Int32Array(toks.length);
    toks.forEach((tok, i) => { ids[i] = this.#ids.get(tok) ?? SimpleTokenizer.UNKNOWN; });
    return ids;
  }

  /**
   * The text of `ids`: words joined by single spaces (the word level keeps no spacing, so
   * "Hi, you" comes back as "hi , you"), characters joined as they are. Padding and
   * end-of-sequence ids are skipped; unknown ones read '<unk>'.
   */
  decode(ids: ArrayLike<number>): string {
    const op = 'SimpleTokenizer.decode';
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw typeError(op, 'ids', 'an array of ids', ids);
    const out: string[] = [];
    for (let i = 0; i < ids.length; ++i) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw rangeError(op, `ids[${i}]`, `must be an id in [0, ${this.vocabSize}) but is ${id}`);
      if (id === SimpleTokenizer.PAD || id === SimpleTokenizer.EOS) continue;
      out.push(id === SimpleTokenizer.UNKNOWN ? '<unk>' : this.#tokens[id - kReserved]);
    }
    return out.join(this.level === 'word' ? ' ' : '');
  }

  toJSON(): TokenizerJSON {
    return { level: this.level, tokens: this.#tokens.slice() };
  }
}
