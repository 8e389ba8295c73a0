// rl.data: preference data from JSON Lines, and a small built-in tokenizer.
export { readPreferences } from './jsonl';
export type { PreferencePair } from './jsonl';
export { SimpleTokenizer } from './tokenizer';
export type { TokenizerJSON, TokenizerLevel, TokenizerOptions } from './tokenizer';
