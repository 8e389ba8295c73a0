// What was built and what the machine offers; threads; device memory statistics; the op table.
import { rangeError } from './errors';
import { buildRecord, native, NativeBackends, NativeMemoryStats, NativeOpRow } from './native';
import { parseDevice } from './tensor';
import { numberIn } from './validate';

export interface BuildInfo {
  cuda: boolean;
  cudaArchitectures: string[];
  cudaVersion: string;
  /** What the build was asked for: 'AUTO', 'ON' or 'OFF' (RLHF_CUDA). */
  cudaRequest: string;
  /** Why an automatic CUDA build fell back to CPU, or null. */
  cudaFallback: string | null;
  /** The SIMD variant in use ('avx512', 'avx2' or the 'x86-64' baseline). */
  simd: string;
  simdCompiled: string;
  compiler: string;
  buildType: string;
  builder: string;
  napiVersion: number;
}

export function buildInfo(): BuildInfo {
  const n = native().buildInfo();
  const record = buildRecord();
  return {
    ...n,
    cudaFallback: (record?.cudaFallback as string | null | undefined) ?? null,
    builder: (record?.builder as string | undefined) ?? 'node-gyp',
  };
}

export type Backends = NativeBackends;

export function backends(): Backends {
  return native().backends();
}

export function setNumThreads(n: number): void {
  const v = numberIn('setNumThreads', 'n', n, 1, 1024);
  if (!Number.isInteger(v)) throw rangeError('setNumThreads', 'n', `must be an integer but is ${v}`);
  native().setNumThreads(v);
}

export function getNumThreads(): number {
  return native().getNumThreads();
}

export type MemoryStats = NativeMemoryStats;

/** Live and peak device memory held by rlhf-node's tensors on a CUDA device (default cuda:0). */
export function memoryStats(device: 'cuda' | `cuda:${number}` = 'cuda'): MemoryStats {
  const index = parseDevice(device, 'memoryStats');
  if (index < 0) return { liveAllocations: 0, liveBytes: 0, peakBytes: 0, totalAllocations: 0 };
  return native().memoryStats(index);
}

export type OpRow = NativeOpRow;

/** The op table: every op, its kernel family, whether CUDA implements it, its test tolerances. */
export function opTable(): OpRow[] {
  return native().opTable();
}
