// 16-bit floats on the host. float16 (IEEE binary16) and bfloat16 tensors hold their bits in a
// Uint16Array; these convert float values to those bits (round to nearest even) and back.
// Only CUDA kernels compute on them (the logits of the log-prob and actor-loss ops).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bits nearest to x (round to nearest even; overflow gives ±Infinity, NaN stays NaN). */
export function float16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // A float16 denormal (or 0): shift the mantissa with its implicit 1 into place, rounding.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rest > half || (rest === half && (h & 1) !== 0)) h += 1;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h += 1;  // may carry into the exponent: still right
  return sign | h;
}

/** The value of float16 bits. */
export function float16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** The bfloat16 bits nearest to x (round to nearest even; NaN stays NaN). */
export function bfloat16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return ((b >>> 16) | 0x40) & 0xffff;
  const rounded = b + 0x7fff + ((b >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** The value of bfloat16 bits. */
export function bfloat16Value(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

export type HalfDtype = 'float16' | 'bfloat16';

/** Float values as the bits of a 16-bit float type. */
export function toHalfBits(values: ArrayLike<number>, dtype: HalfDtype): Uint16Array {
  const out = new Uint16Array(values.length);
  const conv = dtype === 'float16' ? float16Bits : bfloat16Bits;
  for (let i = 0; i < values.length; ++i) out[i] = conv(values[i]);
  return out;
}

/** The float values of 16-bit float bits. */
export function fromHalfBits(bits: Uint16Array, dtype: HalfDtype): Float32Array {
  const out = new Float32Array(bits.length);
  const conv = dtype === 'float16' ? float16Value : bfloat16Value;
  for (let i = 0; i < bits.length; ++i) out[i] = conv(bits[i]);
  return out;
}
