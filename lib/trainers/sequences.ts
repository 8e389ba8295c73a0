// Completions under a sequence policy (rl.nn.TokenPolicy or any SequencePolicy): every completion token is predicted from the contextSize
// tokens before it (prompt tokens included, padding before the start), and a completion's
// log-probability is the sum (or mean) of its tokens'. The forward and backward chain of ops
// shared by the trainers that score sequences (DPO, and the RLHF trainers after it).
import { Random } from '../nn/random';
import { logprobsFromLogits, logprobsFromLogitsBackward } from '../ops/policy';
import { sequenceLogprobs, sequenceLogprobsBackward } from '../ops/preference';
import { Tensor, tensor } from '../tensor';
import { SequencePolicy } from './policy';

const kIgnore = -100;
const kPad = 0;
const kEos = 2;  // SimpleTokenizer.EOS

/** B completions laid out [B, T] (T the longest), with each token's context window. */
export interface CompletionBatch {
  B: number;
  T: number;
  contextSize: number;
  /** [B*T, contextSize]: the tokens before each position, padded on the left. */
  contexts: Int32Array;
  /** [B*T]: the completion's tokens, the ignore index past its end. */
  labels: Int32Array;
  /** [B*T]: 1 on completion tokens. */
  mask: Uint8Array;
  /** [B]: tokens per completion. */
  lengths: Int32Array;
}

export function completionBatch(prompts: readonly Int32Array[], completions: readonly Int32Array[], contextSize: number): CompletionBatch {
  const B = completions.length;
  const T = Math.max(1, ...completions.map((c) => c.length));
  const C = contextSize;
  const contexts = new Int32Array(B * T * C).fill(kPad);
  const labels = new Int32Array(B * T).fill(kIgnore);
  const mask = new Uint8Array(B * T);
  const lengths = new Int32Array(B);
  for (let b = 0; b < B; ++b) {
    const sequence = new Int32Array(prompts[b].length + completions[b].length);
    sequence.set(prompts[b]);
    sequence.set(completions[b], prompts[b].length);
    lengths[b] = completions[b].length;
    for (let t = 0; t < completions[b].length; ++t) {
      const at = prompts[b].length + t;  // the position predicted
      const row = b * T + t;
      labels[row] = sequence[at];
      mask[row] = 1;
      for (let k = 0; k < C; ++k) {
        const src = at - C + k;
        if (src >= 0) contexts[row * C + k] = sequence[src];
      }
    }
  }
  return { B, T, contextSize: C, contexts, labels, mask, lengths };
}

/**
 * The log-probability of each completion under `policy` ([B]), and the backward that takes
 * d loss / d those log-probabilities into the policy's parameter gradients. The policy's next
 * backward must be this one (a policy keeps its last forward).
 */
export function completionLogprobs(policy: SequencePolicy, batch: CompletionBatch, average = false): {
  logprobs: Float32Array;
  backward: (grad: Float32Array) => void;
} {
  const { B, T, contextSize: C } = batch;
  const { logits } = policy.forward(tensor(batch.contexts, [B * T, C], { dtype: 'int32' }));
  const labels = tensor(batch.labels, [B * T], { dtype: 'int32' });
  const tokens = logprobsFromLogits(logits, labels, { ignoreIndex: kIgnore }).logprobs;
  const mask = tensor(batch.mask, [B, T], { dtype: 'uint8' });
  const seq = sequenceLogprobs(tensor(tokens.dataSync() as Float32Array, [B, T]), mask, { average });
  const backward = (grad: Float32Array) => {
    const gradTokens = sequenceLogprobsBackward({ gradSequence: grad, mask }, { average });
    const gradLogprobs: Tensor = tensor(gradTokens.dataSync() as Float32Array, [B * T]);
    const gradLogits = logprobsFromLogitsBackward({ logits, labels, gradLogprobs, logprobs: tokens }, { ignoreIndex: kIgnore });
    policy.backward({ gradLogits });
  };
  return { logprobs: Float32Array.from(seq.dataSync() as Float32Array), backward };
}

/** A draw from softmax(row / temperature) of the [n, V] logits at `at`. */
function sample(logits: Float32Array, at: number, V: number, temperature: number, rng: Random): number {
  let max = -Infinity;
  for (let k = 0; k < V; ++k) max = Math.max(max, logits[at + k]);
  let sum = 0;
  for (let k = 0; k < V; ++k) sum += Math.exp((logits[at + k] - max) / temperature);
  let u = rng.uniform() * sum;
  for (let k = 0; k < V - 1; ++k) {
    u -= Math.exp((logits[at + k] - max) / temperature);
    if (u < 0) return k;
  }
  return V - 1;
}

/**
 * One completion of each prompt, sampled token by token from `policy` until the end-of-sequence
 * token (kept as the completion's last) or maxLength tokens; all prompts step together.
 */
export function sampleCompletions(policy: SequencePolicy, prompts: readonly Int32Array[], maxLength: number, temperature: number,
                                  rng: Random): Int32Array[] {
  const C = policy.config.contextSize, V = policy.config.vocabSize;
  const seqs = prompts.map((p) => Array.from(p));
  const done = seqs.map(() => false);
  for (let t = 0; t < maxLength; ++t) {
    const active = seqs.map((_, i) => i).filter((i) => !done[i]);
    if (active.length === 0) break;
    const contexts = new Int32Array(active.length * C).fill(kPad);
    active.forEach((i, r) => {
      const s = seqs[i];
      for (let k = 0; k < C; ++k) if (s.length - C + k >= 0) contexts[r * C + k] = s[s.length - C + k];
    });
    const logits = policy.forward(tensor(contexts, [active.length, C], { dtype: 'int32' })).logits.dataSync() as Float32Array;
    active.forEach((i, r) => {
      const token = sample(logits, r * V, V, temperature, rng);
      seqs[i].push(token);
      if (token === kEos) done[i] = true;
    });
  }
  return seqs.map((s, i) => Int32Array.from(s.slice(prompts[i].length)));
}

/** Each label's log-probability under `model` at `temperature`, [B*T] (0 past a completion's end). */
export function tokenLogprobs(model: SequencePolicy, batch: CompletionBatch, temperature = 1): Float32Array {
  const { logits } = model.forward(tensor(batch.contexts, [batch.B * batch.T, batch.contextSize], { dtype: 'int32' }));
  const lp = logprobsFromLogits(logits, tensor(batch.labels, [batch.B * batch.T], { dtype: 'int32' }),
    { temperature, ignoreIndex: kIgnore }).logprobs;
  return Float32Array.from(lp.dataSync() as Float32Array);
}
