// The chunk kernels of each instruction-set variant (chunk_kernels.h) and the choice among them.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "../reference/nn_math.h"
#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/policy.h"
#include "rlhf/preference.h"

// For a function that only requests lines: GCC 12 finds it free of side effects when it is not
// inlined early, and drops its calls (it did so to every token GAE tile's requests, and to the
// matrix product's of its output tile, which restored made the product 0.5-3% slower and so
// went); inlined early, its requests stay. Check with objdump that a new one's prefetch
// instructions are there.
#define RLHF_KEEP_PREFETCH __attribute__((always_inline)) inline

// For the pieces of a loop body whose float lanes must stay in registers (pipelinedThree): one
// left out of line, even for a partial vector before or after the loop, takes the lanes' addresses,
// and GCC 12 then stores every lane to memory at every vector of the loop.
#define RLHF_ALWAYS_INLINE __attribute__((always_inline)) static inline
#define RLHF_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

namespace rlhf {

// Time-major GAE works on column blocks of this many; a thread with fewer than kGaeNarrow
// columns walks each on its own with scalars, and needs no scratch.
constexpr int64_t kGaeBlock = 2048;
constexpr int64_t kGaeNarrow = 8;
// Rows of token GAE and returns in flight per thread: 8 in the AVX2 tiles, 4 interleaved in the
// scalar form. The scratch holds 2*kRows row buffers.
constexpr int kRows = 8;
constexpr int kScalarRows = 4;
// Floats between row buffers: room for T floats at any place in a 64-byte line (see lineLike),
// rounded to an odd number of lines, so that neither the pitch nor twice it is ever a multiple
// of 4 KiB (rows that far apart fall in one L1 set and alias in the store buffer).
inline int64_t rowPitch(int64_t T) {
  const int64_t lines = (T + 15) / 16 + 1;
  return (lines | 1) * 16;
}
// Floats of a part's scratch for `rows` rows of [*,T] (two buffers for each row in flight: at
// most kRows), with room to align its start to a line.
inline int64_t rowScratchFloats(int64_t T, int64_t rows) {
  return 2 * (rows < kRows ? rows : kRows) * rowPitch(T) + 16;
}
// Time-major GAE's scratch for blocks of w columns: the running advantage, with room to sit at
// the outputs' place in a page, then two line-aligned slots for output rows, each with room to
// sit like its destination in a line, and room to align the start.
inline int64_t gaeNextFloats(int64_t w) { return (w + 1024 + 15) / 16 * 16; }
inline int64_t gaeSlotFloats(int64_t w) { return (w + 16 + 15) / 16 * 16; }
inline int64_t gaeScratchFloats(int64_t w) { return gaeNextFloats(w) + 2 * gaeSlotFloats(w) + 16; }
// The first 64-byte line boundary at or after p (scratch is allocated 16 floats longer).
inline float* alignToLine(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

// The softmax statistics of one row of logits z, about its largest logit M:
//   logsumexp_j(z_j/tau) = M/tau + logSum,  E = sum_j p_j z_j/tau = M/tau + meanShift,
// so that entropy = logSum - meanShift and z_j/tau - lse = (z_j - M)/tau - logSum keep their
// digits when the logits are large. All NaN when the row holds a NaN, a +inf, or only -inf.
struct RowSoftmax {
  float max = 0;
  double logSum = 0, meanShift = 0;
};

// A row of logits in the pipeline of rowSoftmaxStep: its buffers (e: 64-byte aligned, at least
// V + 32 floats; blockMax: at least V / 32 + 2), the statistics its first step returned, and what
// its gradient takes.
struct PipelinedRow {
  const float* z = nullptr;
  float* e = nullptr;
  float* blockMax = nullptr;
  RowSoftmax s;
  int32_t label = 0;
  float gLp = 0, gH = 0;
  float* out = nullptr;
};

// Sums over a row of the p_j and p_j log p_j that rowGradGiven formed from the forward's outputs.
struct RowCheck {
  double p = 0, pLogP = 0;
};

// Sums of the policy and value losses over one block of tokens.
struct PolicyBlock {
  double loss = 0, kl2 = 0, kl3 = 0, klp = 0;
  int64_t clipped = 0, lower = 0;
};
struct ValueBlock {
  double loss = 0;
  int64_t valid = 0, clipped = 0;
  MaskedMoments returns, errors;
};

// Sums of the pairwise loss over a range of pairs.
struct PairwiseBlock {
  double loss = 0, center = 0, margin = 0, chosen = 0, rejected = 0;
  int64_t correct = 0;
};
struct DpoBlock {
  double loss = 0, chosen = 0, rejected = 0, correct = 0;  // chosen/rejected: sums of beta*x, beta*y
};
struct MaskedSum {
  double sum = 0, count = 0;
};
// Rows of out[b,t] = scale[b] * x[b,t] (scale[b] alone when x is null) where mask[b,t] != 0
// (everywhere when the mask is null), else 0; then, where at[b] >= 0, out[b,at[b]] becomes
// float(out[b,at[b]] + add[b]) (added in float64). shapeRewards' token rewards and scores, and
// sequenceLogprobsBackward's rows.
struct MaskedScaleRows {
  const float* x = nullptr;
  const uint8_t* mask = nullptr;
  int64_t T = 0;
  const float* scale = nullptr;
  const int64_t* at = nullptr;  // null: no addend
  const double* add = nullptr;
  float* out = nullptr;
};

// `streaming`: the outputs are far larger than the cache, write them with non-temporal stores.
struct ChunkKernels {
  const char* name;  // "avx512", "avx2" or "x86-64" (the baseline every x86-64 CPU has)
  void (*gaeColumns)(const GaeArgs&, int64_t n0, int64_t n1, float* scratch, bool streaming);
  void (*tokenGaeRows)(const TokenGaeArgs&, int64_t b0, int64_t b1, float* scratch, bool streaming);
  void (*discountedReturnsRows)(const DiscountedReturnsArgs&, int64_t b0, int64_t b1, float* scratch,
                                bool streaming);
  int64_t (*countNonZero)(const uint8_t* m, int64_t n);
  // The moments of blocks [0, blocks) of kMomentsBlock elements of x[0, n) (the last may be short).
  void (*blocksMoments)(const float* x, const uint8_t* m, int64_t n, int64_t blocks, MaskedMoments* out);
  void (*affineRange)(const AffineArgs&, int64_t i0, int64_t i1, bool streaming);
  RowSoftmax (*rowSoftmax)(const float* z, int64_t V, float tau);
  // The statistics of rows z and z2 into out[0] and out[1], the two read in step.
  void (*rowSoftmaxPair)(const float* z, const float* z2, int64_t V, float tau, RowSoftmax* out);
  // One step of the gradient of rows from their logits alone: the statistics of row `in`, read
  // from memory (its exps kept in its buffers for its own gradient step), and the gradient of row
  // `grad`, whose statistics step came before, written; either may be null.
  RowSoftmax (*rowSoftmaxStep)(const PipelinedRow* in, const PipelinedRow* grad, int64_t V, float tau,
                               bool streaming);
  // The row's gradient in one pass from the forward's log-prob lp and entropy H (used only when
  // gH != 0) of a label in [0, V); the sums it returns tell whether lp and H fit the row.
  RowCheck (*rowGradGiven)(const float* z, int64_t V, float tau, int32_t label, float lp, float H, float gLp, float gH,
                           float* out, bool streaming);
  void (*klRange)(const KlPenaltyArgs&, int64_t i0, int64_t i1, bool streaming);
  PolicyBlock (*policyBlock)(const PolicyLossArgs&, const double* rowWeight, const float* seqLogRatio, int64_t i0,
                             int64_t i1, bool streaming);
  ValueBlock (*valueBlock)(const ValueLossArgs&, const double* rowWeight, int64_t i0, int64_t i1, bool streaming);
  // `streaming`: both gradients stream (they lie alike in their lines: streamedInStep).
  PairwiseBlock (*pairwiseRange)(const PairwiseLossArgs&, int64_t i0, int64_t i1, bool streaming);
  // Rows [0, rows) of x (rows of T) summed where m is nonzero (everywhere when m is null).
  void (*maskedRowSums)(const float* x, const uint8_t* m, int64_t T, int64_t rows, MaskedSum* out);
  void (*maskedScaleRows)(const MaskedScaleRows&, int64_t b0, int64_t b1, bool streaming);
  DpoBlock (*dpoRange)(const DpoLossArgs&, double bcoDelta, int64_t i0, int64_t i1, bool streaming);
  void (*biasActRows)(const BiasActArgs&, int64_t r0, int64_t r1);
  void (*biasActGradRows)(const BiasActBackwardArgs&, int64_t r0, int64_t r1);
  void (*columnSums)(const float* x, int64_t rows, int64_t cols, int64_t c0, int64_t c1, double* sums);
  void (*adamwRange)(const nn_math::AdamwStep&, const float* g, float* p, float* m, float* v, int64_t i0, int64_t i1);
  double (*sumSquaresRange)(const float* x, int64_t i0, int64_t i1);
  void (*triadRange)(float* a, const float* b, const float* c, int64_t i0, int64_t i1);
  float (*readRange)(const float* x, int64_t i0, int64_t i1);
};

const ChunkKernels& baselineKernels();
const ChunkKernels* avx2Kernels();    // null when not compiled in or when the CPU lacks AVX2 or FMA
const ChunkKernels* avx512Kernels();  // null when not compiled in or when the CPU lacks AVX-512 F/DQ/BW/VL
// The variant in use: the widest of AVX-512 and AVX2 that is compiled in and that the CPU has,
// else the baseline. RLHF_SIMD=baseline or RLHF_SIMD=avx2 in the environment caps the choice.
const ChunkKernels& activeKernels();
// The chunk kernels for this call (setCpuPath), or null when the scalar reference should run.
const ChunkKernels* kernelsForCall();

// --- shared by the dispatch files ---
// Below these many elements a call runs on the calling thread: waking the pool costs more.
constexpr int64_t kMinElementsPerThread = 1 << 15;
// Below this many flops a matrix product runs on the calling thread: waking the pool costs more.
// From 2^19 to 2^22 when the multiply went to AVX-512: the PPO MLP's products (about 2^20 flops
// each, the backward's two side by side 2^21) then run on one thread, and its training step
// (`mlp step` in the Node bench, 2 threads) took 49-71 us against 79-101 us.
constexpr int64_t kMinParallelFlops = int64_t{1} << 22;
// Columns or offsets handed to one thread start on a multiple of this (a 64-byte line of floats).
constexpr int64_t kLine = 16;
// Outputs of at least this many bytes are written with non-temporal stores: they would crowd
// the last-level cache, and skipping the read-for-ownership saves a third of the traffic of a
// typical op. 16 MiB until the pairwise and DPO losses streamed too: over 1M pairs (8 MiB of
// gradients), alternated in one process on AMD EPYC (Zen 5, 32 MB L3), pairwise 403-413 -> 345-355
// us and DPO 587-590 -> 482 us (66% -> 75-81% of the paired triad); on the Intel host (300 MB L3)
// streaming the pairwise gradients changed nothing (0.996-1.016 of the time).
constexpr int64_t kStreamingBytes = 8 << 20;
inline bool isStreaming(int64_t outputFloats) { return outputFloats * 4 >= kStreamingBytes; }

// Whether `in` can be read while non-temporal stores to `out` are in flight, both walked forward
// in step. A load waits for an older store with the same low 12 address bits (4K aliasing),
// which happens when out lies a little ahead of in within a page: 6 to 10 times slower here.
// Out at in's place, behind it, or a kilobyte or more ahead (more than the stores in flight;
// 512 bytes ahead already ran at full speed) is clear.
constexpr uintptr_t kAliasWindow = 1024;
inline bool clearAhead(uintptr_t outMinusIn) {
  const uintptr_t ahead = outMinusIn & 4095;
  return ahead == 0 || ahead >= kAliasWindow;
}
inline bool clearOfAliasing(const void* out, const void* in) {
  return clearAhead(reinterpret_cast<uintptr_t>(out) - reinterpret_cast<uintptr_t>(in));
}

// clearOfAliasing for every output against every input (a null input, one not given, is clear).
inline bool allClearOfAliasing(std::initializer_list<const float*> outputs,
                               std::initializer_list<const float*> inputs) {
  for (const float* o : outputs)
    for (const float* i : inputs)
      if (i != nullptr && !clearOfAliasing(o, i)) return false;
  return true;
}


// Whether two outputs of n floats each, written in step, stream: large enough, alike in their
// 64-byte lines (so that one head of plain stores brings both to a vector boundary), and clear
// of aliasing with every input.
inline bool streamedInStep(int64_t n, const float* a, const float* b, std::initializer_list<const float*> inputs) {
  return isStreaming(2 * n) && (reinterpret_cast<uintptr_t>(a) - reinterpret_cast<uintptr_t>(b)) % 64 == 0 &&
         allClearOfAliasing({a, b}, inputs);
}

// Whether the tiles of token GAE and of returns may stream their outputs straight into place, a
// whole line of each of 8 rows at a time, rather than through row buffers copied out after
// each group of rows: T a whole number of lines, so that every row sits alike in its lines;
// each output at the same place in a line as `aligned` (the input the tiles align to), so that
// its lines are whole; and each output at every input's place in a page or a kilobyte or more
// from it either way (the tiles walk back, and stores to 8 rows are in flight).
inline bool straightRowLines(int64_t T, const float* aligned, std::initializer_list<const float*> outputs,
                             std::initializer_list<const float*> inputs) {
  if (T % 16 != 0) return false;
  for (const float* o : outputs)
    if (((reinterpret_cast<uintptr_t>(o) - reinterpret_cast<uintptr_t>(aligned)) & 63) != 0) return false;
  return allClearOfAliasing(outputs, inputs) && allClearOfAliasing(inputs, outputs);
}

}  // namespace rlhf
