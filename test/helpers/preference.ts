// Helpers shared by the preference tests (pairwise-loss, dpo-loss, sequence-logprobs,
// group-advantages): an error matcher that accepts either TypeError or RangeError where the
// contract names only the argument, and a float64 dot product for vector-Jacobian checks.
import { T } from './index';

/**
 * Asserts that fn throws a TypeError or RangeError (not a plain Error) whose message starts with
 * `op: ` and matches `message`. For errors whose class the contract leaves open (a missing
 * either-or option), the argument name is what a caller needs.
 */
export function expectArgError(t: T, fn: () => unknown, op: string, message: RegExp, what: string): boolean {
  try {
    fn();
  } catch (e) {
    const ok = (e instanceof TypeError || e instanceof RangeError) && e.message.startsWith(`${op}: `) && message.test(e.message);
    t.ok(ok, ok ? `${what}: ${(e as Error).constructor.name} ${JSON.stringify((e as Error).message)}` :
      `${what}: expected a TypeError or RangeError from ${op} matching ${message}, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    return ok;
  }
  t.fail(`${what}: did not throw`);
  return false;
}

/** sum_i a_i b_i in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; ++i) s += a[i] * b[i];
  return s;
}
