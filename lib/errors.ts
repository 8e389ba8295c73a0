// The error pattern of the whole package: "<op>: expected <what> for `<arg>` but received <what>".
// TypeError for a wrong kind or dtype, RangeError for a bad shape, length or value, and an Error
// with a `code` for the rest.

export type ErrorCode = 'E_CUDA_UNAVAILABLE' | 'E_CUDA' | 'E_OOM' | 'E_DISPOSED' | 'E_DETACHED' | 'E_ADDON_LOAD' | 'E_DEVICE' | 'E_FORMAT' | 'E_IO' | 'E_FROZEN';

export class RlhfError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'RlhfError';
    this.code = code;
  }
}

/** A short description of what a caller passed, for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return 'an Array';
  if (ArrayBuffer.isView(v)) return v.constructor.name;
  const dtype = (v as { dtype?: unknown }).dtype;
  if (typeof v === 'object' && v.constructor?.name === 'Tensor' && typeof dtype === 'string')
    return `${/^[aeio]/.test(dtype) ? 'an' : 'a'} ${dtype} Tensor`;
  if (typeof v === 'object') {
    const name = (v as object).constructor?.name;
    return name && name !== 'Object' ? `a ${name}` : 'an object';
  }
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return `'${v}'`;
  return `a ${typeof v}`;
}

export function typeError(op: string, arg: string, expected: string, received: unknown): TypeError {
  return new TypeError(`${op}: expected ${expected} for \`${arg}\` but received ${describe(received)}`);
}

export function rangeError(op: string, arg: string, message: string): RangeError {
  return new RangeError(`${op}: \`${arg}\` ${message}`);
}
