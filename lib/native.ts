// The boundary with the native addon: the loader and the whole native surface as one interface.
// Ops take positional arguments in the order written here; the C++ side (native/addon/ops.cpp)
// re-checks every one of them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { markAsUntransferable } from 'node:worker_threads';

import { RlhfError } from './errors';

/** CUDA memory owned by a JS object (native/addon/device_buffer.h). */
export interface DeviceBuffer {
  dispose(): void;
  isDisposed(): boolean;
  copyFromHost(host: ArrayBufferView): void;
  copyToHost(host: ArrayBufferView): void;
  copyFromDevice(src: DeviceBuffer): void;
}

/** A buffer argument: host memory as a TypedArray, or device memory. */
export type Raw = Float32Array | Int32Array | Uint8Array | Uint16Array | DeviceBuffer;
/** Host memory, as the kernels see it. */
export type HostRaw = Exclude<Raw, DeviceBuffer>;
type Opt<T> = T | null;
/** A discount or lambda: a number, or an array of T (per step) or T*N (per element) values. */
export type RawRate = number | Float32Array | DeviceBuffer;

export interface NativeOpRow {
  name: string;
  family: string;
  cuda: boolean;
  cpuTol: number;
  cudaTol: number;
}

export interface NativeBuildInfo {
  cuda: boolean;
  cudaArchitectures: string[];
  cudaVersion: string;
  cudaRequest: string;
  simd: string;
  simdCompiled: string;
  compiler: string;
  buildType: string;
  napiVersion: number;
}

export interface NativeBackends {
  /**
   * readStreams: how the row passes that only read walk their rows now (by vendor: 'one' on AMD).
   * hugePages: whether large new host outputs ask for 2 MiB pages (Linux, transparent huge pages in madvise mode).
   */
  cpu: { available: boolean; threads: number; hardwareThreads: number; simd: string; readStreams: 'one' | 'several'; hugePages: boolean };
  cuda: {
    compiled: boolean;
    devices: number;
    runtimeVersion: string;
    driverVersion: string;
    deviceList: { index: number; name: string; computeCapability: string; totalMemory: number; peakBandwidthGBs: number }[];
  };
}

export interface NativeMemoryStats {
  liveAllocations: number;
  liveBytes: number;
  peakBytes: number;
  totalAllocations: number;
}

/** KL options as the addon takes them: enum indices, Infinity for "no clamp". */
export interface NativeKlOptions {
  estimator: number;
  clampLogRatio: number;
  clampOutput: number;
  straightThrough: boolean;
}

export interface NativeAggregation {
  aggregation: number;
  normalizer: number;
}

export interface NativePolicyOptions extends NativeAggregation {
  clipLow: number;
  clipHigh: number;
  dualClip: number;
  clampLogRatio: number;
  importance: number;
  clipfracMode: number;
}

export interface NativeActorOptions extends NativePolicyOptions {
  temperature: number;
  ignoreIndex: number;
  entropyCoef: number;
  klCoef: number;
}

// The stats of a loss op come back as numbers the addon writes into a Float64Array the caller
// passes, in the slot order the readers below (and the addon's entry points) write down, rather
// than as an object the addon builds: after a large op has left the caches to other memory, such
// a call costs about 10 us less (no property name to intern, no shape transition to look up).

/** The most stats slots any op writes (the actor loss's nine). */
const kStatsSlots = 9;
// A synchronous call's stats are read before it returns, so one array serves every such call of
// this thread. An ArrayBuffer of its own: a small typed array made with a length may live inside
// the JS heap, where the addon could not keep its address.
const syncStats = new Float64Array(new ArrayBuffer(8 * kStatsSlots));

/** The stats of `call` (a prepared loss op) run now, as `read` takes them from its array. */
export function statsOfCall<S>(call: (stats: Float64Array, async: boolean) => unknown, read: (s: Float64Array) => S): S {
  call(syncStats, false);
  return read(syncStats);
}

/** The same for an Async call, with an array of its own: the kernel writes it on a worker while other calls run. */
export async function statsOfAsyncCall<S>(call: (stats: Float64Array, async: boolean) => unknown,
                                          read: (s: Float64Array) => S): Promise<S> {
  const stats = new Float64Array(new ArrayBuffer(8 * kStatsSlots));
  await call(stats, true);
  return read(stats);
}

export interface NativePolicyStats {
  loss: number;
  clipfrac: number;
  clipfracLower: number;
  approxKl: number;
  approxKlK3: number;
  ppoKl: number;
}

export interface NativeValueStats {
  loss: number;
  vfClipfrac: number;
  explainedVariance: number;
}

export interface NativeActorStats extends NativePolicyStats {
  policyLoss: number;
  entropy: number;
  kl: number;
}

export interface NativePairwiseStats {
  loss: number;
  accuracy: number;
  meanMargin: number;
  meanChosen: number;
  meanRejected: number;
}

export interface NativeDpoStats {
  loss: number;
  rewardsChosen: number;
  rewardsRejected: number;
  accuracy: number;
  margin: number;
}

export function policyStatsOf(s: Float64Array): NativePolicyStats {
  return { loss: s[0], clipfrac: s[1], clipfracLower: s[2], approxKl: s[3], approxKlK3: s[4], ppoKl: s[5] };
}

export function valueStatsOf(s: Float64Array): NativeValueStats {
  return { loss: s[0], vfClipfrac: s[1], explainedVariance: s[2] };
}

/** The policy loss's six slots (its `loss` is the policy loss), then the total loss, entropy and KL. */
export function actorStatsOf(s: Float64Array): NativeActorStats {
  return { loss: s[6], clipfrac: s[1], clipfracLower: s[2], approxKl: s[3], approxKlK3: s[4], ppoKl: s[5], policyLoss: s[0],
    entropy: s[7], kl: s[8] };
}

export function pairwiseStatsOf(s: Float64Array): NativePairwiseStats {
  return { loss: s[0], accuracy: s[1], meanMargin: s[2], meanChosen: s[3], meanRejected: s[4] };
}

export function dpoStatsOf(s: Float64Array): NativeDpoStats {
  return { loss: s[0], rewardsChosen: s[1], rewardsRejected: s[2], accuracy: s[3], margin: s[4] };
}

export interface NativeAddon {
  gae(T: number, N: number, rewards: Raw, values: Raw, nextValues: Opt<Raw>, lastValues: Opt<Raw>,
      terminated: Opt<Raw>, truncated: Opt<Raw>, dones: Opt<Raw>, nextDone: Opt<Raw>,
      gamma: RawRate, lambda: RawRate, advantages: Raw, returns: Raw, async: boolean): void | Promise<void>;
  tokenGae(B: number, T: number, rewards: Raw, values: Raw, mask: Opt<Raw>, lastValues: Opt<Raw>,
           gamma: number, lambda: number, maskMode: number, advantages: Raw, returns: Raw,
           async: boolean): void | Promise<void>;
  discountedReturns(B: number, T: number, rewards: Raw, mask: Opt<Raw>, gamma: number, returns: Raw,
                    async: boolean): void | Promise<void>;
  maskedMean(x: Raw, mask: Opt<Raw>, async: boolean): number | Promise<number>;
  maskedVar(x: Raw, mask: Opt<Raw>, unbiased: boolean, async: boolean): number | Promise<number>;
  maskedWhiten(x: Raw, mask: Opt<Raw>, preset: number, shiftMean: boolean, scaleByStd: boolean, eps: number,
               out: Raw, async: boolean): void | Promise<void>;
  firstNonFinite(x: Raw): number;

  logprobsFromLogits(N: number, V: number, logitsDtype: number, logits: Raw, labels: Raw, temperature: number, ignoreIndex: number,
                     logprobs: Raw, entropy: Opt<Raw>, async: boolean): void | Promise<void>;
  logprobsFromLogitsBackward(N: number, V: number, logitsDtype: number, logits: Raw, labels: Raw, gradLogprobs: Raw,
                             gradEntropy: Opt<Raw>, logprobs: Opt<Raw>, entropy: Opt<Raw>, temperature: number,
                             ignoreIndex: number, gradLogits: Raw, async: boolean): void | Promise<void>;
  klPenalty(logprobs: Raw, refLogprobs: Raw, options: NativeKlOptions, kl: Raw, grad: Raw,
            async: boolean): void | Promise<void>;
  shapeRewards(B: number, T: number, scores: Raw, kl: Raw, mask: Raw, hasEos: Opt<Raw>, klCoef: number,
               scorePlacement: number, missingEosPenalty: number, scoreClip: number, rewards: Raw,
               async: boolean): void | Promise<void>;
  ppoPolicyLoss(B: number, T: number, logprobs: Raw, oldLogprobs: Raw, advantages: Raw, mask: Opt<Raw>,
                options: NativePolicyOptions, grad: Raw, stats: Float64Array, async: boolean): void | Promise<void>;
  valueLoss(B: number, T: number, values: Raw, oldValues: Opt<Raw>, returns: Raw, mask: Opt<Raw>, clip: number,
            options: NativeAggregation, grad: Raw, stats: Float64Array, async: boolean): void | Promise<void>;
  actorLossFromLogits(B: number, T: number, V: number, logitsDtype: number, logits: Raw, labels: Raw, oldLogprobs: Raw, advantages: Raw,
                      refLogprobs: Opt<Raw>, mask: Opt<Raw>, options: NativeActorOptions, kl: NativeKlOptions,
                      gradLogits: Raw, logprobs: Opt<Raw>, entropy: Opt<Raw>, stats: Float64Array,
                      async: boolean): void | Promise<void>;

  pairwiseRewardLoss(chosen: Raw, rejected: Raw, margin: Opt<Raw>, marginValue: number, centerCoef: number,
                     gradChosen: Raw, gradRejected: Raw, stats: Float64Array, async: boolean): void | Promise<void>;
  dpoLoss(policyChosen: Raw, policyRejected: Raw, refChosen: Raw, refRejected: Raw, chosenLengths: Opt<Raw>,
          rejectedLengths: Opt<Raw>, lossType: number, beta: number, labelSmoothing: number, discopopTau: number,
          gradChosen: Raw, gradRejected: Raw, stats: Float64Array, async: boolean): void | Promise<void>;
  sequenceLogprobs(B: number, T: number, tokenLogprobs: Raw, mask: Opt<Raw>, average: boolean, out: Raw,
                   async: boolean): void | Promise<void>;
  sequenceLogprobsBackward(B: number, T: number, gradSequence: Raw, mask: Opt<Raw>, average: boolean, out: Raw,
                           async: boolean): void | Promise<void>;
  groupAdvantages(rewards: Raw, groupSize: number, groupIds: Opt<Raw>, estimator: number, scale: number, eps: number,
                  out: Raw, async: boolean): void | Promise<void>;

  matmul(M: number, N: number, K: number, a: Raw, lda: number, transA: boolean, b: Raw, ldb: number, transB: boolean,
         c: Raw, ldc: number, accumulate: boolean, bias: Opt<Raw>, activation: number, z: Opt<Raw>,
         async: boolean): void | Promise<void>;
  biasAct(rows: number, cols: number, x: Raw, bias: Opt<Raw>, activation: number, y: Raw, z: Opt<Raw>,
          async: boolean): void | Promise<void>;
  biasActBackward(rows: number, cols: number, gradY: Raw, y: Opt<Raw>, z: Opt<Raw>, activation: number, gradX: Raw,
                  gradBias: Opt<Raw>, async: boolean): void | Promise<void>;
  denseBackward(rows: number, inSize: number, outSize: number, x: Raw, w: Raw, y: Opt<Raw>, z: Opt<Raw>, activation: number,
                gradY: Raw, gradZ: Raw, gradW: Raw, gradBias: Opt<Raw>, gradX: Opt<Raw>, accumulateGradX: boolean,
                async: boolean): void | Promise<void>;
  embedding(n: number, dim: number, vocab: number, ids: Raw, table: Raw, out: Raw, async: boolean): void | Promise<void>;
  embeddingBackward(n: number, dim: number, vocab: number, ids: Raw, gradOut: Raw, gradTable: Raw,
                    async: boolean): void | Promise<void>;
  layerNorm(rows: number, cols: number, x: Raw, gamma: Opt<Raw>, beta: Opt<Raw>, eps: number, y: Raw, mean: Raw, rstd: Raw,
            async: boolean): void | Promise<void>;
  layerNormBackward(rows: number, cols: number, x: Raw, gamma: Opt<Raw>, mean: Raw, rstd: Raw, gradY: Raw, gradX: Raw,
                    gradGamma: Opt<Raw>, gradBeta: Opt<Raw>, async: boolean): void | Promise<void>;
  meanPool(B: number, T: number, D: number, x: Raw, mask: Opt<Raw>, out: Raw, async: boolean): void | Promise<void>;
  meanPoolBackward(B: number, T: number, D: number, gradOut: Raw, mask: Opt<Raw>, gradX: Raw,
                   async: boolean): void | Promise<void>;
  adamw(params: Raw[], grads: Raw[], m: Raw[], v: Raw[], step: number, lr: number, beta1: number, beta2: number, eps: number,
        weightDecay: number): void;
  sumSquares(grads: Raw[]): number;
  scaleGrads(grads: Raw[], factor: number): void;

  buildInfo(): NativeBuildInfo;
  backends(): NativeBackends;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  memoryStats(device: number): NativeMemoryStats;
  synchronize(device: number): void;
  opTable(): NativeOpRow[];
  measureBandwidth(elements: number, repeats: number, async: boolean): number | Promise<number>;
  /** Seconds of one STREAM triad a = b + 3c over three Float32Arrays of one length. */
  triadSeconds(a: Float32Array, b: Float32Array, c: Float32Array): number;
  /** Seconds of one pass that only reads a Float32Array (4 bytes an element), on the thread pool. */
  readSeconds(x: Float32Array): number;
  memoryTriadElements(): number;
  setCpuPath(path: 'auto' | 'baseline' | 'avx2' | 'reference'): void;
  /** How the passes that only read walk their rows: by the CPU's vendor, one at a time, or several in step. */
  setReadStreams(mode: 'auto' | 'one' | 'several'): void;
  placeShift(buffer: ArrayBuffer, inputs: (HostRaw | null)[]): number;
  placeInPage(array: HostRaw): number;
  /** Asks that the whole 2 MiB pages of `buffer` be huge pages when first touched; whether it asked. */
  adviseHugePages(buffer: ArrayBuffer): boolean;
  /** Whether the first whole 2 MiB page within the array carries that request; false if none (for tests). */
  hugePagesRequested(array: HostRaw): boolean;
  DeviceBuffer: new (bytes: number, device: number) => DeviceBuffer;
  setUntransferableMarker(marker: (o: object) => void): void;
}

const root = path.resolve(__dirname, '..');

/** Where the addon may be, in the order tried: cmake-js's output, then node-gyp's. */
export const addonCandidates: readonly string[] = [
  path.join(root, 'build', 'Release', 'rlhf.node'),
  path.join(root, 'build', 'rlhf.node'),
  path.join(root, 'build', 'Debug', 'rlhf.node'),
];

function loadAddon(): NativeAddon {
  const override = process.env.RLHF_ADDON_PATH;
  const candidates = override ? [override] : addonCandidates;
  const causes: string[] = [];
  for (const file of candidates) {
    if (!fs.existsSync(file)) {
      causes.push(`  ${file}: not found`);
      continue;
    }
    try {
      const addon = require(file) as NativeAddon;
      // Async calls mark the ArrayBuffers they run on, so that a transfer cannot move memory
      // out from under a kernel (RELIABILITY.md).
      addon.setUntransferableMarker(markAsUntransferable);
      return addon;
    } catch (e) {
      causes.push(`  ${file}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new RlhfError('E_ADDON_LOAD',
    'rlhf-node: the native addon could not be loaded. Tried:\n' + causes.join('\n') +
    `\nBuild it with \`npm run build\` in ${root} (needs cmake >= 3.18 and a C++17 compiler; ` +
    'RLHF_CUDA=0 skips CUDA), or `npm run build:gyp` for the CPU-only node-gyp build.');
}

let cached: NativeAddon | null = null;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  if (cached === null) cached = loadAddon();
  return cached;
}

/** Build facts written by scripts/build-native.js, or null for a node-gyp build. */
export function buildRecord(): Record<string, unknown> | null {
  const file = path.join(root, 'build', 'rlhf-build.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}
