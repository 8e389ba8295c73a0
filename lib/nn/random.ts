// Seeded randomness for initialisation: the same seed gives the same model on every machine.

/** Where a generator is in its stream: enough to continue it exactly (a checkpoint's resume). */
export interface RandomState {
  state: number;
  spare: number | null;
}

/** A seeded generator (mulberry32) of uniform and normal draws. */
export class Random {
  #state: number;
  #spare: number | null = null;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  snapshot(): RandomState {
    return { state: this.#state, spare: this.#spare };
  }

  restore(s: RandomState): void {
    this.#state = s.state >>> 0;
    this.#spare = s.spare;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal (Box-Muller; the second draw of each pair is kept for the next call). */
  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = 1 - this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

/** 0..n-1 in a random order (Fisher-Yates with `rng`). */
export function shuffledIndices(n: number, rng: Random): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; --i) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Where a ShuffledPasses is: the rest of the current pass and how many passes have begun. */
export interface PassesState {
  order: number[];
  pass: number;
}

/**
 * Indices 0..n-1 in passes, pass p shuffled by seed + p: a trainer's order over its data, whose
 * state checkpoints as JSON.
 */
export class ShuffledPasses {
  #order: number[] = [];
  #pass = 0;

  constructor(readonly n: number, readonly seed: number) {}

  /** Up to `count` next indices, all from the current pass (a new one begins once it is used up). */
  take(count: number): number[] {
    if (this.#order.length === 0) this.#order = shuffledIndices(this.n, new Random(this.seed + this.#pass++));
    return this.#order.splice(0, count);
  }

  snapshot(): PassesState {
    return { order: this.#order.slice(), pass: this.#pass };
  }

  restore(s: PassesState): void {
    this.#order = s.order.slice();
    this.#pass = s.pass;
  }
}

/**
 * `out` (rows x cols, row-major) := gain * a matrix with orthonormal rows or columns (whichever
 * are fewer), as torch.nn.init.orthogonal_: the Q of a Gaussian matrix's QR decomposition with
 * R's diagonal made positive. Gram-Schmidt (modified, twice for stability) in float64 gives that
 * Q directly: each column's norm is R's positive diagonal entry.
 */
export function orthogonal(out: Float32Array, rows: number, cols: number, gain: number, rng: Random): void {
  const tall = rows >= cols;
  const n = tall ? rows : cols;  // length of the vectors made orthonormal
  const m = tall ? cols : rows;  // how many
  const q: Float64Array[] = [];
  for (let j = 0; j < m; ++j) {
    const v = new Float64Array(n);
    for (let i = 0; i < n; ++i) v[i] = rng.normal();
    for (let pass = 0; pass < 2; ++pass)
      for (const u of q) {
        let dot = 0;
        for (let i = 0; i < n; ++i) dot += u[i] * v[i];
        for (let i = 0; i < n; ++i) v[i] -= dot * u[i];
      }
    let norm = 0;
    for (let i = 0; i < n; ++i) norm += v[i] * v[i];
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; ++i) v[i] /= norm;
    q.push(v);
  }
  for (let r = 0; r < rows; ++r)
    for (let c = 0; c < cols; ++c) out[r * cols + c] = gain * (tall ? q[c][r] : q[r][c]);
}
