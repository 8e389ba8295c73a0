// The optimised CPU entry points: split the work over the thread pool, run the chunk kernels of
// the instruction-set variant this CPU supports.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_variants.h"
#include "rlhf/kernels.h"
#include "thread_pool.h"

namespace rlhf {

// Each variant's table (kernel_table.h, compiled in its kernels_*.cpp).
namespace baseline {
const ChunkKernels& table();
}
#ifdef RLHF_HAVE_AVX2_VARIANT
namespace avx2 {
const ChunkKernels& table();
}
#endif
#ifdef RLHF_HAVE_AVX512_VARIANT
namespace avx512 {
const ChunkKernels& table();
}
#endif

const ChunkKernels& baselineKernels() { return baseline::table(); }

const ChunkKernels* avx2Kernels() {
#if defined(RLHF_HAVE_AVX2_VARIANT) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::table();
#endif
  return nullptr;
}

const ChunkKernels* avx512Kernels() {
#if defined(RLHF_HAVE_AVX512_VARIANT) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return &avx512::table();
#endif
  return nullptr;
}

static const ChunkKernels& chooseKernels() {
  const char* forced = std::getenv("RLHF_SIMD");
  const bool capBaseline = forced != nullptr && std::strcmp(forced, "baseline") == 0;
  const bool capAvx2 = forced != nullptr && std::strcmp(forced, "avx2") == 0;
  if (capBaseline) return baselineKernels();
  if (!capAvx2 && avx512Kernels() != nullptr) return *avx512Kernels();
  if (avx2Kernels() != nullptr) return *avx2Kernels();
  return baselineKernels();
}

const ChunkKernels& activeKernels() {
  static const ChunkKernels& k = chooseKernels();
  return k;
}

bool avx2IsSeparatePath() { return avx2Kernels() != nullptr && avx2Kernels() != &activeKernels(); }

static std::atomic<CpuPath> gPath{CpuPath::Auto};

void setCpuPath(CpuPath p) { gPath.store(p); }
CpuPath cpuPath() { return gPath.load(); }
const char* cpuVariantName() { return activeKernels().name; }

static const ChunkKernels* kernelsOf(CpuPath p) {
  switch (p) {
    case CpuPath::Reference: return nullptr;
    case CpuPath::Baseline: return &baselineKernels();
    case CpuPath::Avx2: return avx2IsSeparatePath() ? avx2Kernels() : &activeKernels();
    case CpuPath::Auto: break;
  }
  return &activeKernels();
}

const char* cpuPathName(CpuPath p) {
  const ChunkKernels* k = kernelsOf(p);
  return k == nullptr ? "reference" : k->name;
}

const ChunkKernels* kernelsForCall() { return kernelsOf(gPath.load()); }

// Rows in step for the row passes that only read. On the Intel Xeon host they were first tuned on
// (300 MB L3), four rows in step kept more reads in flight: sequenceLogprobs [4096,4096] ran at
// 73-77% of the paired triad against 64-70% one row at a time (2 threads). On AMD EPYC (Zen 5,
// 32 MB L3) it is the other way round. A C++ sketch of the masked row sum over that shape, 2
// threads: one stream a thread 80-82% of the paired triad, four in step 67-69% (and 69-73%
// against 57-60% while the host's memory ran twice as fast). sequenceLogprobs itself, the two
// alternated in one process: 1.38-1.43 ms one row at a time, 1.58-1.61 ms four in step, the one
// faster in 81 of 90 turns. logprobsFromLogits [4096,32000] one row 3% faster than pairs, [1024,
// 128256] the same. (maskedMean's blocks stay four in step everywhere: with its float64 sums the
// blocks in step are what keeps the AMD core's adders busy, 1.36-1.39 ms against 1.59-1.61 ms.)
static bool severalByDefault() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_is("amd")) return false;
#endif
  return true;
}

static bool severalFromEnvironment() {
  const char* forced = std::getenv("RLHF_READ_STREAMS");
  if (forced != nullptr && std::strcmp(forced, "one") == 0) return false;
  if (forced != nullptr && std::strcmp(forced, "several") == 0) return true;
  return severalByDefault();
}

static std::atomic<ReadStreams> gReadStreams{ReadStreams::Auto};

void setReadStreams(ReadStreams r) { gReadStreams.store(r); }

bool readsSeveralInStep() {
  static const bool byDefault = severalFromEnvironment();
  switch (gReadStreams.load()) {
    case ReadStreams::One: return false;
    case ReadStreams::Several: return true;
    case ReadStreams::Auto: break;
  }
  return byDefault;
}

uint32_t streamingPlaceInPage(const void* const* inputs, int count) {
  std::vector<uintptr_t> at;
  for (int i = 0; i < count; ++i)
    if (inputs[i] != nullptr) at.push_back(reinterpret_cast<uintptr_t>(inputs[i]) & 4095);
  if (at.empty()) return 0;
  // The first input's own place first, then each later line of the page in turn.
  for (uintptr_t line = 0; line < 4096; line += 64) {
    const uintptr_t place = (at[0] + line) & 4095;
    bool clear = true;
    for (const uintptr_t in : at) clear = clear && clearAhead(place - in) && clearAhead(in - place);
    if (clear) return static_cast<uint32_t>(place);
  }
  return static_cast<uint32_t>(at[0]);
}

void gaeCpu(const GaeArgs& a) {
  const ChunkKernels* kp = kernelsForCall();
  if (kp == nullptr) return gaeReference(a);
  const ChunkKernels& k = *kp;
  const int64_t grain = std::max<int64_t>(kLine, kMinElementsPerThread / std::max<int64_t>(a.T, 1));
  const bool streaming = isStreaming(2 * a.T * a.N);
  parallelFor(a.N, grain, kLine, [&](int64_t n0, int64_t n1) {
    const int64_t w = std::min(kGaeBlock, n1 - n0);
    std::vector<float> scratch(static_cast<size_t>(w < kGaeNarrow ? 0 : gaeScratchFloats(w)));
    k.gaeColumns(a, n0, n1, alignToLine(scratch.data()), streaming);
  });
}

// Spreads the B rows of a [B,T] op over the pool; each part gets its own row buffers, as many
// as it has rows in flight, left uninitialised (every element a kernel copies out it wrote
// first): zeroing all 16 for one long row took as long as the kernel (B = 1, T = 131072).
template <typename RowsFn>
static void forRowParts(int64_t B, int64_t T, RowsFn rows) {
  const int64_t grain = std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(T, 1));
  parallelFor(B, grain, 1, [&](int64_t b0, int64_t b1) {
    const std::unique_ptr<float[]> scratch(new float[static_cast<size_t>(rowScratchFloats(T, b1 - b0))]);
    rows(b0, b1, alignToLine(scratch.get()));
  });
}

void tokenGaeCpu(const TokenGaeArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return tokenGaeReference(a);
  const bool streaming = isStreaming(2 * a.B * a.T);
  forRowParts(a.B, a.T, [&](int64_t b0, int64_t b1, float* scratch) { k->tokenGaeRows(a, b0, b1, scratch, streaming); });
}

void discountedReturnsCpu(const DiscountedReturnsArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return discountedReturnsReference(a);
  const bool streaming = isStreaming(a.B * a.T);
  forRowParts(a.B, a.T, [&](int64_t b0, int64_t b1, float* scratch) {
    k->discountedReturnsRows(a, b0, b1, scratch, streaming);
  });
}

MaskedMoments maskedMomentsCpu(const MaskedMomentsArgs& a) {
  const ChunkKernels* kp = kernelsForCall();
  if (kp == nullptr) return maskedMomentsReference(a);
  const ChunkKernels& k = *kp;
  const int64_t blocks = (a.n + kMomentsBlock - 1) / kMomentsBlock;
  std::vector<MaskedMoments> partial(static_cast<size_t>(blocks));
  const int64_t grain = std::max<int64_t>(1, kMinElementsPerThread / kMomentsBlock);
  parallelFor(blocks, grain, 1, [&](int64_t b0, int64_t b1) {
    const int64_t i = b0 * kMomentsBlock;
    k.blocksMoments(a.x + i, a.mask != nullptr ? a.mask + i : nullptr, a.n - i, b1 - b0, partial.data() + b0);
  });
  MaskedMoments total;
  for (const MaskedMoments& p : partial) total = combineMoments(total, p);
  return total;
}

void affineCpu(const AffineArgs& a) {
  const ChunkKernels* kp = kernelsForCall();
  if (kp == nullptr) return affineReference(a);
  const ChunkKernels& k = *kp;
  const bool streaming = isStreaming(a.n);
  parallelFor(a.n, kMinElementsPerThread, kLine, [&](int64_t i0, int64_t i1) { k.affineRange(a, i0, i1, streaming); });
}

}  // namespace rlhf
