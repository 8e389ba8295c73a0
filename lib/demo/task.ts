// The built-in task of `rlhf demo`: a toy language of 16 words, a hidden "gold" reward that
// stands for what people actually want, and simulated raters who compare two completions by it.
//
// Why this shows reward over-optimisation (Gao et al. 2022, "Scaling laws for reward model
// over-optimization"): the raters only ever see completions of the initial, near-uniform policy.
// Among those more than three positive words in one completion are rare (about 5%) and mostly
// just four, which cost 0.75, so the preferences carry next to no evidence of the gushing penalty
// below: the learned reward model learns "positive words good, negative words bad, the more the
// better". PPO against that model first moves the policy toward a few positive words, which the
// gold reward likes too, then on into "good great good nice fine good great good", where the
// learned reward keeps rising while the gold reward, now paying the penalty, falls below where it
// started. The KL penalty to the initial policy slows that drift but does not stop it.
import { PreferencePair } from '../data/jsonl';
import { SimpleTokenizer } from '../data/tokenizer';
import { rangeError, typeError } from '../errors';
import { Random } from '../nn/random';

export const positiveWords: readonly string[] = ['good', 'great', 'nice', 'fine'];
export const negativeWords: readonly string[] = ['bad', 'awful', 'poor'];
export const neutralWords: readonly string[] = ['the', 'a', 'cat', 'dog', 'sat', 'ran', 'on', 'mat', 'and'];
export const vocabulary: readonly string[] = [...positiveWords, ...negativeWords, ...neutralWords];

/** Positive words a completion may hold before more of them start to cost (see goldReward). */
const kPraiseLimit = 3;
/** The penalty's weight: 0.75 * (positives - 3)^2, so 8 positive words score 8 - 18.75 < 0. */
const kGushWeight = 0.75;

const positives = new Set(positiveWords);
const negatives = new Set(negativeWords);

/** The word-level tokenizer of the vocabulary (ids 3.. for the 16 words after the 3 reserved ones). */
export function makeTokenizer(): SimpleTokenizer {
  return SimpleTokenizer.fromTexts([...vocabulary]);
}

/** `n` prompts of 3 neutral words each, drawn with `seed`. */
export function prompts(seed: number, n: number): string[] {
  const rng = new Random(seed);
  const word = () => neutralWords[Math.floor(rng.uniform() * neutralWords.length)];
  return Array.from({ length: n }, () => `${word()} ${word()} ${word()}`);
}

/**
 * The hidden gold reward of a completion: +1 per positive word, -1 per negative word, and a
 * penalty for gushing, 0.75 * (p - 3)^2 when it holds p > 3 positive words: "good great nice
 * fine good great" is not six times as good as "good", it is spam. The prompt does not enter
 * the reward; it is taken so that the function is a reward of (prompt, completion) as the
 * trainers expect.
 */
export function goldReward(_prompt: string, completion: string): number {
  let pos = 0, neg = 0;
  for (const w of completion.toLowerCase().split(/\s+/)) {
    if (positives.has(w)) ++pos;
    else if (negatives.has(w)) ++neg;
  }
  const excess = Math.max(0, pos - kPraiseLimit);
  return pos - neg - kGushWeight * excess * excess;
}

export interface RaterOptions {
  prompts: string[];
  /** Completions sampled per prompt; every two of a prompt's completions make a pair. Default 2. */
  completionsPerPrompt?: number;
  /** Completions for the prompts, one per prompt in order (e.g. (ps) => trainer.generate(ps)). */
  samples: (prompts: string[]) => string[];
  seed: number;
  /** Rater noise: A is preferred with probability sigmoid((gold(A) - gold(B)) / temperature); default 1. */
  temperature?: number;
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** One rater's verdict on a pair (Bradley-Terry): the better completion wins only more often, not always. */
function judge(prompt: string, a: string, b: string, temperature: number, rng: Random): PreferencePair {
  const pA = sigmoid((goldReward(prompt, a) - goldReward(prompt, b)) / temperature);
  return rng.uniform() < pA ? { prompt, chosen: a, rejected: b } : { prompt, chosen: b, rejected: a };
}

/**
 * Preference pairs from simulated raters: each prompt's completions are sampled, every two of
 * them are compared, and the rater prefers A over B with probability sigmoid(gold(A) - gold(B)).
 */
export function simulateRaters(o: RaterOptions): PreferencePair[] {
  const op = 'simulateRaters';
  if (!Array.isArray(o.prompts)) throw typeError(op, 'prompts', 'an array of strings', o.prompts);
  if (typeof o.samples !== 'function') throw typeError(op, 'samples', 'a function (prompts) => completions', o.samples);
  const k = o.completionsPerPrompt ?? 2;
  if (!Number.isInteger(k) || k < 2) throw rangeError(op, 'completionsPerPrompt', `must be an integer >= 2 but is ${k}`);
  const temperature = o.temperature ?? 1;
  if (!(temperature > 0 && Number.isFinite(temperature))) throw rangeError(op, 'temperature', `must be a finite number > 0 but is ${temperature}`);
  // One call for all completions, so a policy samples them as one batch.
  const asked = o.prompts.flatMap((p) => Array.from({ length: k }, () => p));
  const completions = o.samples(asked);
  if (!Array.isArray(completions) || completions.length !== asked.length)
    throw rangeError(op, 'samples', `must return one completion per prompt (${asked.length}) but returned ${String(completions?.length)}`);
  const rng = new Random(o.seed);
  const pairs: PreferencePair[] = [];
  o.prompts.forEach((prompt, p) => {
    const mine = completions.slice(p * k, (p + 1) * k);
    for (let i = 0; i < k; ++i)
      for (let j = i + 1; j < k; ++j) pairs.push(judge(prompt, mine[i], mine[j], temperature, rng));
  });
  return pairs;
}
