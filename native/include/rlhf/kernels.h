// The kernel interface: plain pointers, sizes and option structs, no Node-API.
// Every op has three entry points with the same argument struct: `<op>Reference` (scalar C++,
// the ground truth), `<op>Cpu` (threads + SIMD) and `<op>Cuda` (device pointers, see cuda.h).
// Semantics: shared/SEMANTICS.md §2-3; shapes are row-major.
#pragma once
#include <cstdint>

namespace rlhf {

// Time-major GAE over environment rollouts, [T,N]: row t holds the N environments at step t.
//   delta_t = r_t + gamma_t*(1-terminated_t)*V'_t - V_t
//   A_t     = delta_t + gamma_t*lambda_t*(1 - (terminated_t OR truncated_t))*A_{t+1}
// Rows 0..T-2 of V' and of terminated are read at `nextValues + t*N` and `terminated + t*N`, row
// T-1 at `nextValuesLast` and `terminatedLast`. The caller points them at values+N / lastValues,
// at a caller's nextValues, or at CleanRL's shifted `dones` / `nextDone`, so the kernel needs no
// mode. A null `terminated` or `truncated` means the flag is never set.
struct GaeArgs {
  int64_t T = 0, N = 0;
  const float* rewards = nullptr;
  const float* values = nullptr;
  const float* nextValues = nullptr;
  const float* nextValuesLast = nullptr;
  const uint8_t* terminated = nullptr;
  const uint8_t* terminatedLast = nullptr;
  const uint8_t* truncated = nullptr;
  // gamma_t,n = gammaArray[t*gammaStrideT + n*gammaStrideN] when gammaArray is set (strides (1,0)
  // per step, (N,1) per element), else gammaValue. Lambda likewise.
  float gammaValue = 1.0f;
  const float* gammaArray = nullptr;
  int64_t gammaStrideT = 0, gammaStrideN = 0;
  float lambdaValue = 1.0f;
  const float* lambdaArray = nullptr;
  int64_t lambdaStrideT = 0, lambdaStrideN = 0;
  float* advantages = nullptr;
  float* returns = nullptr;
};

// How token-level GAE treats masked positions (SEMANTICS.md §3).
enum class MaskMode : int32_t {
  Premask = 0,  // TRL 0.9, OpenRLHF: rewards and values multiplied by the mask first
  Skip = 1,     // verl: masked tokens are transparent, value and advantage carry through them
  None = 2,     // current TRL PPO: the mask is not used
};

// Batch-major GAE over token sequences, [B,T]; bootstrap from lastValues (0 when null).
struct TokenGaeArgs {
  int64_t B = 0, T = 0;
  const float* rewards = nullptr;
  const float* values = nullptr;
  const uint8_t* mask = nullptr;      // may be null only with MaskMode::None
  const float* lastValues = nullptr;  // [B] or null
  float gamma = 1.0f, lambda = 1.0f;
  MaskMode maskMode = MaskMode::Premask;
  float* advantages = nullptr;
  float* returns = nullptr;
};

// REINFORCE returns, [B,T]: G_t = m_t*r_t + gamma*G_{t+1}, G_T = 0 (mask null = all valid).
struct DiscountedReturnsArgs {
  int64_t B = 0, T = 0;
  const float* rewards = nullptr;
  const uint8_t* mask = nullptr;
  float gamma = 1.0f;
  float* returns = nullptr;
};

// Count, mean and sum of squared deviations (m2) of the elements where mask != 0 (mask null =
// all). Accumulated in float64 over fixed blocks combined in a fixed order, so the result does
// not depend on the thread count.
struct MaskedMoments {
  double count = 0, mean = 0, m2 = 0;
};
struct MaskedMomentsArgs {
  int64_t n = 0;
  const float* x = nullptr;
  const uint8_t* mask = nullptr;
};

// out = (x - center) * scale + shift, for every element (masked or not), computed in float32
// in that order.
struct AffineArgs {
  int64_t n = 0;
  const float* x = nullptr;
  float center = 0, scale = 1, shift = 0;
  float* out = nullptr;
};

// Elements per block of the moments reduction; the only thing that fixes its rounding.
constexpr int64_t kMomentsBlock = 4096;

void gaeReference(const GaeArgs& a);
void tokenGaeReference(const TokenGaeArgs& a);
void discountedReturnsReference(const DiscountedReturnsArgs& a);
MaskedMoments maskedMomentsReference(const MaskedMomentsArgs& a);
void affineReference(const AffineArgs& a);

// Which code the *Cpu entry points run: the fastest variant this CPU supports (default), the
// x86-64 baseline variant, the AVX2 variant (the active one where the CPU lacks AVX2), or the
// scalar reference. For tests and benchmarks that compare them.
enum class CpuPath : int32_t { Auto = 0, Baseline = 1, Reference = 2, Avx2 = 3 };
void setCpuPath(CpuPath p);
CpuPath cpuPath();
const char* cpuVariantName();  // the instruction-set variant in use: "avx512", "avx2" or "x86-64"
// Whether the AVX2 variant is compiled in, the CPU runs it, and it is not the one in use: then
// CpuPath::Avx2 runs code that CpuPath::Auto does not, and tests cover both.
bool avx2IsSeparatePath();
// The code a path runs: "reference", or the name of the variant it picks on this CPU.
const char* cpuPathName(CpuPath p);
// The paths whose code differs on this CPU, for tests that run every one: the baseline, the AVX2
// variant when it is not the active one, and the active variant.
inline bool cpuPathIsDistinct(CpuPath p) { return p != CpuPath::Avx2 || avx2IsSeparatePath(); }

// How the row passes that only read (sequenceLogprobs' row sums, logprobsFromLogits' forward) walk
// a thread's rows: one after another, or several in step. Which keeps more reads in flight depends
// on the CPU's prefetchers (dispatch.cpp says what was measured); Auto chooses by the CPU's vendor,
// and RLHF_READ_STREAMS=one|several in the environment overrides that. Both give the same bits.
// For tests and benchmarks that compare them.
enum class ReadStreams : int32_t { Auto = 0, One = 1, Several = 2 };
void setReadStreams(ReadStreams r);
// Whether the passes that only read take several rows in step now (Auto resolved).
bool readsSeveralInStep();

void gaeCpu(const GaeArgs& a);
void tokenGaeCpu(const TokenGaeArgs& a);
void discountedReturnsCpu(const DiscountedReturnsArgs& a);
MaskedMoments maskedMomentsCpu(const MaskedMomentsArgs& a);
void affineCpu(const AffineArgs& a);

// Index of the first element of x[0..n) that is NaN or infinite, or -1 (the checkFinite option).
int64_t firstNonFiniteCpu(const float* x, int64_t n);

// Where in a 4 KiB page a new output should start (a byte offset) for the kernels to stream it
// at full speed beside `inputs`, the arrays read in step with it: at the first input's place in
// a 64-byte line (the line tiles align to it), and at every input's place in a page or a
// kilobyte or more from it either way (clear of 4K aliasing, see clearOfAliasing). Null inputs
// are skipped; where no place is clear of them all, the first input's place.
uint32_t streamingPlaceInPage(const void* const* inputs, int count);

// Chan et al.'s pairwise combination of two sets' moments; used by every backend in the same
// order so that they round alike.
inline MaskedMoments combineMoments(const MaskedMoments& a, const MaskedMoments& b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  MaskedMoments r;
  r.count = a.count + b.count;
  const double delta = b.mean - a.mean;
  r.mean = a.mean + delta * (b.count / r.count);
  r.m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / r.count);
  return r;
}

}  // namespace rlhf
