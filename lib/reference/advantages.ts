// Plain TypeScript references for advantage estimation (SEMANTICS.md §3): time-major GAE, token
// GAE over [B,T] sequences and discounted returns, in float64 over number[] or TypedArray inputs.
// Written from the semantics, not from the C++; the tests judge the addon against them and the
// benchmark runs them as its "js" backend, so they are plain loops with no allocation inside.

/** Any array of numbers: number[], Float32Array, Uint8Array, ... */
export type NumberArray = ArrayLike<number>;

/** A discount or lambda: one number, T values (per step) or T*N values (per element). */
export type RateLike = number | NumberArray;

export interface AdvantagesReference {
  advantages: Float64Array;
  returns: Float64Array;
}

export interface GaeReferenceInputs {
  /** [T,N] time-major. */
  rewards: NumberArray;
  /** [T,N]: V(s_t). */
  values: NumberArray;
  /** [N]: value of the state after the last step (used when nextValues is absent). */
  lastValues?: NumberArray | null;
  /** [T,N]: value of the state after step t (auto-reset environments). */
  nextValues?: NumberArray | null;
  /** [T,N] flags: step t ended in a terminal state. */
  terminated?: NumberArray | null;
  /** [T,N] flags: step t ended by a time limit. */
  truncated?: NumberArray | null;
  /** CleanRL [T,N]: done flag stored before step t. Replaces terminated/truncated. */
  dones?: NumberArray | null;
  /** CleanRL [N]: done flag after the last step. */
  nextDone?: NumberArray | null;
}

export interface GaeReferenceOptions {
  gamma: RateLike;
  lambda: RateLike;
}

// Reads a rate at (t, n): a scalar, per step (length T) or per element (length T*N). With N = 1
// both array forms coincide, so the per-step reading is the right one either way.
function rateAt(rate: RateLike, T: number, N: number, t: number, n: number): number {
  if (typeof rate === 'number') return rate;
  if (rate.length === T) return rate[t];
  if (rate.length === T * N) return rate[t * N + n];
  throw new RangeError(`gaeReference: a gamma/lambda array must hold ${T} or ${T * N} values, not ${rate.length}`);
}

/**
 * GAE over environment rollouts, time-major [T,N]:
 *   delta_t = r_t + gamma_t*(1-term_t)*V'_t - V_t,  A_t = delta_t + gamma_t*lambda_t*(1-(term_t|trunc_t))*A_{t+1}
 * with V'_t = nextValues[t] if given, else values[t+1] (lastValues at t = T-1); returns = A + V.
 * CleanRL's convention (dones before step t, nextDone after the last) is taken when `dones` is given.
 */
export function gaeReference(T: number, N: number, inputs: GaeReferenceInputs, opts: GaeReferenceOptions): AdvantagesReference {
  const { rewards, values } = inputs;
  const nextValues = inputs.nextValues ?? null;
  const lastValues = inputs.lastValues ?? null;
  const terminated = inputs.terminated ?? null;
  const truncated = inputs.truncated ?? null;
  const dones = inputs.dones ?? null;
  const nextDone = inputs.nextDone ?? null;
  if (dones !== null && nextDone === null) throw new RangeError('gaeReference: `dones` needs `nextDone`');
  if (nextValues === null && lastValues === null && T > 0) throw new RangeError('gaeReference: `lastValues` or `nextValues` is required');
  const { gamma, lambda } = opts;
  const advantages = new Float64Array(T * N);
  const returns = new Float64Array(T * N);
  for (let n = 0; n < N; ++n) {
    let lastGaeLam = 0;
    for (let t = T - 1; t >= 0; --t) {
      const i = t * N + n;
      let bootstrap: number;
      if (nextValues !== null) bootstrap = nextValues[i];
      else bootstrap = t === T - 1 ? (lastValues as NumberArray)[n] : values[i + N];
      let episodeEnds: boolean;
      let terminal: boolean;
      if (dones !== null) {
        // CleanRL: the flag that says "step t ended its episode" is stored with step t+1.
        terminal = (t === T - 1 ? (nextDone as NumberArray)[n] : dones[i + N]) !== 0;
        episodeEnds = terminal;
      } else {
        terminal = terminated !== null && terminated[i] !== 0;
        episodeEnds = terminal || (truncated !== null && truncated[i] !== 0);
      }
      const g = rateAt(gamma, T, N, t, n);
      const l = rateAt(lambda, T, N, t, n);
      // The formula as written (multiplying by the 0/1 flags, as CleanRL and torchrl do), so
      // that a NaN next to an episode end still propagates exactly as it does there.
      const notTerminal = terminal ? 0 : 1;
      const carry = episodeEnds ? 0 : 1;
      const delta = rewards[i] + g * notTerminal * bootstrap - values[i];
      lastGaeLam = delta + g * l * carry * lastGaeLam;
      advantages[i] = lastGaeLam;
      returns[i] = lastGaeLam + values[i];
    }
  }
  return { advantages, returns };
}

export type MaskModeReference = 'premask' | 'skip' | 'none';

export interface TokenGaeReferenceInputs {
  /** [B,T] batch-major. */
  rewards: NumberArray;
  values: NumberArray;
  /** [B,T], nonzero for response tokens; ignored with maskMode 'none' (may be omitted there). */
  mask?: NumberArray | null;
  /** [B]: value after the last column (default 0). */
  lastValues?: NumberArray | null;
}

export interface TokenGaeReferenceOptions {
  gamma: number;
  lambda: number;
  maskMode: MaskModeReference;
}

/**
 * GAE over token sequences, batch-major [B,T].
 *   premask (TRL 0.9, OpenRLHF): rewards and values multiplied by the mask first; returns = A + m*V.
 *   skip (verl): masked tokens are transparent: the running advantage and next value carry
 *     through them unchanged, so valid tokens get GAE over the valid tokens alone; masked ones
 *     show the carried advantage. returns = A + V (raw values) everywhere.
 *   none (current TRL PPO): the mask is not read; returns = A + V.
 */
export function tokenGaeReference(B: number, T: number, inputs: TokenGaeReferenceInputs, opts: TokenGaeReferenceOptions): AdvantagesReference {
  const { rewards, values } = inputs;
  const mask = inputs.mask ?? null;
  const lastValues = inputs.lastValues ?? null;
  const { gamma, lambda, maskMode } = opts;
  if (maskMode !== 'none' && maskMode !== 'premask' && maskMode !== 'skip')
    throw new RangeError(`tokenGaeReference: unknown maskMode '${String(maskMode)}'`);
  if (mask === null && maskMode !== 'none') throw new RangeError(`tokenGaeReference: maskMode '${maskMode}' needs a mask`);
  const advantages = new Float64Array(B * T);
  const returns = new Float64Array(B * T);
  for (let b = 0; b < B; ++b) {
    const row = b * T;
    let nextValue = lastValues !== null ? lastValues[b] : 0;
    let lastGaeLam = 0;
    for (let t = T - 1; t >= 0; --t) {
      const i = row + t;
      if (maskMode === 'none') {
        const v = values[i];
        lastGaeLam = rewards[i] + gamma * nextValue - v + gamma * lambda * lastGaeLam;
        nextValue = v;
        advantages[i] = lastGaeLam;
        returns[i] = lastGaeLam + v;
      } else if (maskMode === 'premask') {
        const valid = (mask as NumberArray)[i] !== 0;
        // Multiplying by a 0/1 mask would turn a masked NaN into NaN; premasking means "as zero".
        const r = valid ? rewards[i] : 0;
        const v = valid ? values[i] : 0;
        lastGaeLam = r + gamma * nextValue - v + gamma * lambda * lastGaeLam;
        nextValue = v;
        advantages[i] = lastGaeLam;
        returns[i] = lastGaeLam + v;
      } else {
        const v = values[i];
        if ((mask as NumberArray)[i] !== 0) {
          lastGaeLam = rewards[i] + gamma * nextValue - v + gamma * lambda * lastGaeLam;
          nextValue = v;
        }
        advantages[i] = lastGaeLam;
        returns[i] = lastGaeLam + v;
      }
    }
  }
  return { advantages, returns };
}

export interface DiscountedReturnsReferenceInputs {
  /** [B,T] batch-major. */
  rewards: NumberArray;
  /** [B,T]; masked rewards count as 0 (omitted: all valid). */
  mask?: NumberArray | null;
}

/** REINFORCE returns per row: G_t = m_t*r_t + gamma*G_{t+1}, G_T = 0. */
export function discountedReturnsReference(B: number, T: number, inputs: DiscountedReturnsReferenceInputs, opts: { gamma: number }): Float64Array {
  const { rewards } = inputs;
  const mask = inputs.mask ?? null;
  const { gamma } = opts;
  const returns = new Float64Array(B * T);
  for (let b = 0; b < B; ++b) {
    let running = 0;
    for (let t = T - 1; t >= 0; --t) {
      const i = b * T + t;
      const r = mask === null || mask[i] !== 0 ? rewards[i] : 0;
      running = r + gamma * running;
      returns[i] = running;
    }
  }
  return returns;
}
