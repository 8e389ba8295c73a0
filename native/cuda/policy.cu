// CUDA kernels of the policy-gradient family (policy.h, SEMANTICS.md §1, §4-6): log-probs and
// entropy from logits and their backward, KL penalties, reward shaping, the clipped PPO policy
// loss, the value loss and the fused actor loss from logits.
//
//  - Rows of logits: a group of threads per row (a warp for small V, a block of kThreads
//    otherwise) makes one pass over the row with an online logsumexp in float32: a running
//    maximum, the sum of exp((z-m)/tau) and the entropy accumulator sum exp((z-m)/tau)(z-m)/tau,
//    both rescaled when the maximum grows. Logits are float, __half or __nv_bfloat16, read in
//    16-byte packs; the gradient is written in the logits' type. Working from z - max rather
//    than z/tau keeps huge logits exact: the differences are what matter.
//  - Losses over [B,T] tokens: a warp per "item" of up to kItemTokens tokens of one row, in
//    float64 as the scalar reference. Every item leaves a partial result; partials meet in a
//    fixed-shape tree (reducePartials), so repeated runs give the same bits, with no atomics.
//    The aggregation weights come from aggregationRowWeight, on the device, from valid-token
//    counts (integers, so exact).
//  - The fused actor loss: per token log-prob, entropy and row statistics (O(B*T) scratch), the
//    policy, KL and entropy terms and each token's two gradient coefficients, then one pass
//    over the logits that writes the gradient. Three passes over [B*T,V] in all (read, read,
//    write); nothing of that size is allocated besides gradLogits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../reference/policy_math.h"
#include "device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"

namespace rlhf {
namespace cuda {

namespace {

using detail::Moments;
using detail::combine;
using detail::Carver;
using detail::toHost;

using namespace policy_math;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// --- preconditions: a null pointer or a negative size here would fault on the device and
// poison the whole CUDA context, so they are caught on the host ------------------------------

void requireSize(const char* op, const char* name, int64_t n) {
  if (n < 0) throw KernelError(ErrorKind::Range, std::string(op) + ": negative " + name + " " + std::to_string(n));
}

void requirePointer(const void* p, const char* op, const char* name) {
  if (p == nullptr)
    throw KernelError(ErrorKind::Internal, std::string(op) + ": `" + name + "` is a null pointer");
}

void requireDtype(LogitsDtype dtype, const char* op) {
  if (dtype != LogitsDtype::F32 && dtype != LogitsDtype::F16 && dtype != LogitsDtype::BF16)
    throw KernelError(ErrorKind::Type, std::string(op) + ": unknown logits dtype " +
                                           std::to_string(static_cast<int>(dtype)));
}

// --- a NaN test by the bits, so that no compiler flag can make it assume finite values -------

__device__ bool isNan(double x) {
  return (static_cast<unsigned long long>(__double_as_longlong(x)) & 0x7fffffffffffffffull) >
         0x7ff0000000000000ull;
}

// --- element types and 16-byte packs ----------------------------------------------------------

__device__ float toFloat(float x) { return x; }
__device__ float toFloat(__half x) { return __half2float(x); }
__device__ float toFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ T fromFloat(float x);
template <>
__device__ float fromFloat<float>(float x) { return x; }
template <>
__device__ __half fromFloat<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <class T>
struct Pack {
  static constexpr int kWidth = 16 / static_cast<int>(sizeof(T));
};

// One 128-bit load, widened to float.
template <class T>
__device__ void loadPack(const T* p, float (&out)[Pack<T>::kWidth]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  T v[Pack<T>::kWidth];
  memcpy(v, &raw, sizeof(raw));
#pragma unroll
  for (int k = 0; k < Pack<T>::kWidth; ++k) out[k] = toFloat(v[k]);
}

template <class T>
__device__ void storePack(T* p, const float (&in)[Pack<T>::kWidth]) {
  T v[Pack<T>::kWidth];
#pragma unroll
  for (int k = 0; k < Pack<T>::kWidth; ++k) v[k] = fromFloat<T>(in[k]);
  uint4 raw;
  memcpy(&raw, v, sizeof(raw));
  *reinterpret_cast<uint4*>(p) = raw;
}

// A row of V elements as a scalar head up to the first 16-byte boundary, whole packs, and a
// scalar tail. Which thread takes which element depends only on V and the row's address, so
// the rounding of a row's sums is fixed.
struct RowSplit {
  int64_t head, packs, tail;  // tail: index of the first element after the packs
};

template <class T>
__device__ RowSplit splitRow(const T* row, int64_t V) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row);
  int64_t head = addr % sizeof(T) != 0 ? V : static_cast<int64_t>((16 - addr % 16) % 16 / sizeof(T));
  head = head < V ? head : V;
  const int64_t packs = (V - head) / Pack<T>::kWidth;
  return {head, packs, head + packs * Pack<T>::kWidth};
}

// Packs each thread loads before it uses any: several loads in flight per thread.
constexpr int kUnroll = 4;

// --- online logsumexp -------------------------------------------------------------------------

// z/tau, written so that tau = 1 (the common case) costs no division.
struct Temperature {
  float tau;
  bool unit;
  __device__ float scale(float x) const { return unit ? x : x / tau; }
};

Temperature temperature(float tau) { return {tau, tau == 1.0f}; }

// Over the elements seen so far: m their maximum (raw logits), s = sum exp(d), t = sum exp(d) d
// with d = (z - m)/tau. Terms with exp(d) = 0 (z = -inf) count 0 in t. A NaN element makes s
// NaN, which then stays NaN.
struct Lse {
  float m, s, t;
};

__device__ Lse emptyLse() { return {-INFINITY, 0.0f, 0.0f}; }

// Re-expresses the sums about a new maximum m >= a.m: exp(d - shift) = exp(d) exp(-shift).
// A NaN s is left as it is; sums that underflow to nothing are dropped.
__device__ void rescale(Lse& a, float m, const Temperature& tau) {
  if (a.s > 0) {
    const float shift = tau.scale(a.m - m);
    const float factor = expf(shift);
    a.t = factor > 0 ? factor * (a.t + shift * a.s) : 0.0f;
    a.s *= factor;
  }
  a.m = m;
}

template <int W>
__device__ void addElements(Lse& a, const float (&z)[W], const Temperature& tau) {
  float top = a.m;
#pragma unroll
  for (int k = 0; k < W; ++k) top = z[k] > top ? z[k] : top;
  if (top > a.m) rescale(a, top, tau);
#pragma unroll
  for (int k = 0; k < W; ++k) {
    // -inf - m would be NaN when m is -inf too; a NaN element must still reach s.
    const float d = tau.scale(z[k] - a.m);
    const float e = z[k] == -INFINITY ? 0.0f : expf(d);
    a.s += e;
    a.t += e > 0 ? e * d : 0.0f;
  }
}

__device__ Lse combine(Lse a, Lse b, const Temperature& tau) {
  const float m = a.m > b.m ? a.m : b.m;
  rescale(a, m, tau);
  rescale(b, m, tau);
  return {m, a.s + b.s, a.t + b.t};
}

// A struct of 4-byte words (floats, or doubles as their two halves) moved across the warp word
// by word: from `offset` lanes down, or from lane 0.
template <class P>
__device__ P shuffleDownWords(P p, int offset) {
  static_assert(sizeof(P) % 4 == 0, "a struct of 4-byte words");
  uint32_t w[sizeof(P) / 4];
  memcpy(w, &p, sizeof(P));
#pragma unroll
  for (int k = 0; k < static_cast<int>(sizeof(P) / 4); ++k) w[k] = __shfl_down_sync(kFullMask, w[k], offset);
  memcpy(&p, w, sizeof(P));
  return p;
}

template <class P>
__device__ P broadcastWords(P p) {
  uint32_t w[sizeof(P) / 4];
  memcpy(w, &p, sizeof(P));
#pragma unroll
  for (int k = 0; k < static_cast<int>(sizeof(P) / 4); ++k) w[k] = __shfl_sync(kFullMask, w[k], 0);
  memcpy(&p, w, sizeof(P));
  return p;
}

// Combines the G threads' values with `join` in a fixed tree (the warp's shuffles, then the warps
// in order); every thread of the group gets the result. G is 32 (a warp per row) or kThreads
// (the block).
template <int G, class T, class Join>
__device__ T groupReduce(T a, Join join) {
  for (int offset = 16; offset > 0; offset /= 2) a = join(a, shuffleDownWords(a, offset));
  if constexpr (G == 32) {
    return broadcastWords(a);
  } else {
    static_assert(G == kThreads, "a row is a warp or the whole block");
    __shared__ T perWarp[kWarps];
    if (threadIdx.x % 32 == 0) perWarp[threadIdx.x / 32] = a;
    __syncthreads();
    T r = perWarp[0];
    for (int w = 1; w < kWarps; ++w) r = join(r, perWarp[w]);
    return r;
  }
}

// A row's statistics: lse = m/tau + logS, E = sum p z/tau = m/tau + meanShift, so that
// lp = (z_y - m)/tau - logS, H = logS - meanShift and p_j = exp((z_j - m)/tau - logS).
struct RowStat {
  float m, logS, meanShift;
};

__device__ RowStat finish(const Lse& a) { return {a.m, logf(a.s), a.t / a.s}; }

// This thread's share of a row: its head elements, its packs (kUnroll at a time) and its tail
// elements, always in that order.
template <class T, int G>
__device__ Lse threadLse(const T* row, int64_t V, const Temperature& tau, int lane) {
  constexpr int W = Pack<T>::kWidth;
  const RowSplit split = splitRow(row, V);
  Lse acc = emptyLse();
  for (int64_t j = lane; j < split.head; j += G) {
    const float z[1] = {toFloat(row[j])};
    addElements(acc, z, tau);
  }
  const T* body = row + split.head;
  int64_t k = lane;
  for (; k + (kUnroll - 1) * G < split.packs; k += kUnroll * G) {
    float z[kUnroll][W];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) loadPack(body + (k + u * G) * W, z[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) addElements(acc, z[u], tau);
  }
  for (; k < split.packs; k += G) {
    float z[W];
    loadPack(body + k * W, z);
    addElements(acc, z, tau);
  }
  for (int64_t j = split.tail + lane; j < V; j += G) {
    const float z[1] = {toFloat(row[j])};
    addElements(acc, z, tau);
  }
  return acc;
}

// The G threads' sums of a row, combined.
template <int G>
__device__ Lse groupLse(Lse a, const Temperature& tau) {
  return groupReduce<G>(a, [&](const Lse& x, const Lse& y) { return combine(x, y, tau); });
}

template <class T, int G>
__device__ RowStat rowStat(const T* row, int64_t V, const Temperature& tau, int lane) {
  return finish(groupLse<G>(threadLse<T, G>(row, V, tau, lane), tau));
}

// --- the gradient of a row ----------------------------------------------------------------------

// Sums of the p_j and p_j log p_j a RowGrad formed over a thread's share of a row (float64: a
// share has up to V / G terms, and the check they serve is 2^-16).
struct PSums {
  double p, pLogP;
};

// dz_j = ((onehot - p_j) gLp - p_j (d_j - meanShift) gH) / tau with d_j = (z_j - m)/tau; the
// entropy term of p_j = 0 (z_j = -inf) counts 0.
struct RowGrad {
  RowStat stat;
  float gLp, gH;
  Temperature tau;
  // kSums: also add p_j and p_j log p_j to `sums`.
  template <bool kSums>
  __device__ float at(float z, bool label, PSums& sums) const {
    const float d = tau.scale(z - stat.m);
    const float logP = d - stat.logS;
    const float p = expf(logP);
    if (kSums && p > 0) {
      sums.p += p;
      sums.pLogP += static_cast<double>(p) * logP;
    }
    const float entropyTerm = p > 0 ? p * (d - stat.meanShift) * gH : 0.0f;
    return tau.scale((label ? 1.0f - p : -p) * gLp - entropyTerm);
  }
};

// A row's statistics from the forward's log-prob lp and entropy H (policy_math.h, givenFitsRow), as
// the CPU forms them: measured from Lf, the float of L = zy - tau lp (tau times the log-sum-exp),
// near which the logits that carry the mass lie, with c = (Lf - L)/tau, logS = -c and
// meanShift = -c - H, so that p_j = exp((z_j - Lf)/tau + c).
__device__ RowStat givenStat(float zy, float lp, float H, const Temperature& tau) {
  const double L = static_cast<double>(zy) - static_cast<double>(tau.tau) * lp;
  const float Lf = static_cast<float>(L);
  const float c = static_cast<float>((Lf - L) / tau.tau);
  return {Lf, -c, -c - H};
}

// The G threads' sums, added.
template <int G>
__device__ PSums groupSums(PSums a) {
  return groupReduce<G>(a, [](const PSums& x, const PSums& y) { return PSums{x.p + y.p, x.pLogP + y.pLogP}; });
}

// Writes the gradient row g (of the same type as z) with packed loads and stores where z and g
// sit alike relative to 16-byte boundaries, element by element otherwise. `zero`: write zeros
// without reading z (ignored and masked rows).
// kSums: add this thread's p_j and p_j log p_j to `sums` (see PSums).
template <class T, int G, bool kSums>
__device__ void writeGradRow(const T* z, T* g, int64_t V, int64_t label, const RowGrad& rg, bool zero, int lane,
                             PSums& sums) {
  constexpr int W = Pack<T>::kWidth;
  auto one = [&](int64_t j) { return zero ? 0.0f : rg.at<kSums>(toFloat(z[j]), j == label, sums); };
  const uintptr_t za = reinterpret_cast<uintptr_t>(z), ga = reinterpret_cast<uintptr_t>(g);
  if (za % 16 != ga % 16) {
    for (int64_t j = lane; j < V; j += G) g[j] = fromFloat<T>(one(j));
    return;
  }
  const RowSplit split = splitRow(z, V);
  for (int64_t j = lane; j < split.head; j += G) g[j] = fromFloat<T>(one(j));
  int64_t k = lane;
  for (; k + (kUnroll - 1) * G < split.packs; k += kUnroll * G) {
    float v[kUnroll][W];
    if (!zero) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) loadPack(z + split.head + (k + u * G) * W, v[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j0 = split.head + (k + u * G) * W;
#pragma unroll
      for (int e = 0; e < W; ++e) v[u][e] = zero ? 0.0f : rg.at<kSums>(v[u][e], j0 + e == label, sums);
      storePack(g + j0, v[u]);
    }
  }
  for (; k < split.packs; k += G) {
    const int64_t j0 = split.head + k * W;
    float v[W];
    if (!zero) loadPack(z + j0, v);
#pragma unroll
    for (int e = 0; e < W; ++e) v[e] = zero ? 0.0f : rg.at<kSums>(v[e], j0 + e == label, sums);
    storePack(g + j0, v);
  }
  for (int64_t j = split.tail + lane; j < V; j += G) g[j] = fromFloat<T>(one(j));
}

// --- row kernels ------------------------------------------------------------------------------
// Row `row` of [N,V] belongs to the G threads of group threadIdx.x / G. A group leaves as a
// whole (its row is past N, ignored or masked), and a block-wide group is the whole block, so
// no thread ever waits at a barrier for one that left.

template <int G>
__device__ int64_t groupRow() {
  return static_cast<int64_t>(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
}

__device__ bool labelInRange(int64_t label, int64_t V) { return label >= 0 && label < V; }

// A label outside [0, V) that is not ignoreIndex (firstInvalidLabel finds those first) gets a
// NaN log-prob instead of an out-of-bounds read.
template <class T, int G>
__global__ void __launch_bounds__(kThreads) logprobsKernel(const LogprobsArgs a, Temperature tau) {
  const int64_t row = groupRow<G>();
  const int lane = static_cast<int>(threadIdx.x % G);
  if (row >= a.N) return;
  const int32_t y = a.labels[row];
  if (y == a.ignoreIndex) {
    if (lane == 0) {
      a.logprobs[row] = 0.0f;
      if (a.entropy != nullptr) a.entropy[row] = 0.0f;
    }
    return;
  }
  const T* z = static_cast<const T*>(a.logits) + row * a.V;
  const RowStat st = rowStat<T, G>(z, a.V, tau, lane);
  if (lane == 0) {
    a.logprobs[row] = labelInRange(y, a.V) ? tau.scale(toFloat(z[y]) - st.m) - st.logS : NAN;
    if (a.entropy != nullptr) a.entropy[row] = st.logS - st.meanShift;
  }
}

// Two passes over the row in one group: its statistics, then its gradient (the row is often
// still in L2 for the second). Given the forward's log-prob (and entropy, where gH != 0) the
// statistics come from them and one pass does, unless its sums show that they miss the row
// (givenFitsRow); the two passes then write the row again.
template <class T, int G>
__global__ void __launch_bounds__(kThreads) logprobsBackwardKernel(const LogprobsBackwardArgs a, Temperature tau) {
  const int64_t row = groupRow<G>();
  const int lane = static_cast<int>(threadIdx.x % G);
  if (row >= a.N) return;
  const T* z = static_cast<const T*>(a.logits) + row * a.V;
  T* g = static_cast<T*>(a.gradLogits) + row * a.V;
  const int32_t y = a.labels[row];
  PSums sums{0, 0};
  if (y == a.ignoreIndex) {
    writeGradRow<T, G, false>(z, g, a.V, y, RowGrad{}, true, lane, sums);
    return;
  }
  const float gLp = a.gradLogprobs[row], gH = a.gradEntropy != nullptr ? a.gradEntropy[row] : 0.0f;
  const bool entropy = gH != 0.0f;
  if (a.logprobs != nullptr && (!entropy || a.entropy != nullptr) && labelInRange(y, a.V)) {
    const float H = entropy ? a.entropy[row] : 0.0f;
    const RowGrad given{givenStat(toFloat(z[y]), a.logprobs[row], H, tau), gLp, gH, tau};
    writeGradRow<T, G, true>(z, g, a.V, y, given, false, lane, sums);
    const PSums total = groupSums<G>(sums);
    if (givenFitsRow(total.p, total.pLogP, entropy, H)) return;
  }
  const RowGrad rg{rowStat<T, G>(z, a.V, tau, lane), gLp, gH, tau};
  writeGradRow<T, G, false>(z, g, a.V, y, rg, false, lane, sums);
}

// What the fused actor loss keeps of each token between its passes.
struct ActorRows {
  int64_t N, V;
  const void* logits;
  const int32_t* labels;
  int32_t ignoreIndex;
  const uint8_t* mask;
  Temperature tau;
  RowStat* stats;     // [N]
  float* logprobs;    // [N]
  float* entropy;     // [N]
  const float* gLp;   // [N] d loss / d lp
  const float* gH;    // [N] d loss / d H
  void* gradLogits;   // [N,V]
};

__device__ bool actorTokenValid(const ActorRows& a, int64_t i) {
  return (a.mask == nullptr || a.mask[i] != 0) && a.labels[i] != a.ignoreIndex;
}

template <class T, int G>
__global__ void __launch_bounds__(kThreads) actorStatsKernel(const ActorRows a) {
  const int64_t row = groupRow<G>();
  const int lane = static_cast<int>(threadIdx.x % G);
  if (row >= a.N) return;
  if (!actorTokenValid(a, row)) {
    if (lane == 0) {
      a.logprobs[row] = 0.0f;
      a.entropy[row] = 0.0f;
    }
    return;
  }
  const T* z = static_cast<const T*>(a.logits) + row * a.V;
  const RowStat st = rowStat<T, G>(z, a.V, a.tau, lane);
  if (lane == 0) {
    const int32_t y = a.labels[row];
    a.stats[row] = st;
    a.logprobs[row] = labelInRange(y, a.V) ? a.tau.scale(toFloat(z[y]) - st.m) - st.logS : NAN;
    a.entropy[row] = st.logS - st.meanShift;
  }
}

template <class T, int G>
__global__ void __launch_bounds__(kThreads) actorGradKernel(const ActorRows a) {
  const int64_t row = groupRow<G>();
  const int lane = static_cast<int>(threadIdx.x % G);
  if (row >= a.N) return;
  const T* z = static_cast<const T*>(a.logits) + row * a.V;
  T* g = static_cast<T*>(a.gradLogits) + row * a.V;
  const bool valid = actorTokenValid(a, row);
  RowGrad rg{};
  if (valid) rg = {a.stats[row], a.gLp[row], a.gH[row], a.tau};
  PSums unused{0, 0};
  writeGradRow<T, G, false>(z, g, a.V, a.labels[row], rg, !valid, lane, unused);
}

// A warp per row while each lane has at most a few packs of a row; the block beyond.
constexpr int64_t kWarpRowMaxV = 1024;

// The row kernels have no grid stride (a block-wide row shares the block's barriers), so the
// grid's 2^31 - 1 blocks bound the rows: 2^34 - 8 warp rows, each with at least a logit, a
// label and a log-prob (160 GiB at 2^34), or 2^31 - 1 block rows of more than 1024 logits
// (4 TiB): more than one GPU holds, so this never binds in practice.
int64_t maxLogitRows(int64_t V) { return V <= kWarpRowMaxV ? detail::kMaxGridX * kWarps : detail::kMaxGridX; }

template <template <class, int> class Launch, class T, class Args>
void launchGroups(bool warpRows, unsigned blocks, const Args& args, cudaStream_t stream) {
  if (warpRows)
    Launch<T, 32>::run(blocks, args, stream);
  else
    Launch<T, kThreads>::run(blocks, args, stream);
}

// Runs Launch's kernel over N rows for the logits' dtype and the group size that V calls for.
template <template <class, int> class Launch, class Args>
void launchRows(LogitsDtype dtype, int64_t N, int64_t V, const Args& args, cudaStream_t stream, const char* name) {
  const bool warpRows = V <= kWarpRowMaxV;
  detail::requireAtMost(name, "rows", N, maxLogitRows(V));  // the entry functions check first
  const unsigned blocks = static_cast<unsigned>(warpRows ? ceilDiv(N, kWarps) : N);
  switch (dtype) {
    case LogitsDtype::F32: launchGroups<Launch, float>(warpRows, blocks, args, stream); break;
    case LogitsDtype::F16: launchGroups<Launch, __half>(warpRows, blocks, args, stream); break;
    case LogitsDtype::BF16: launchGroups<Launch, __nv_bfloat16>(warpRows, blocks, args, stream); break;
  }
  detail::checkLaunch(name);
}

template <class T, int G>
struct LaunchLogprobs {
  static void run(unsigned blocks, const std::pair<LogprobsArgs, Temperature>& a, cudaStream_t stream) {
    logprobsKernel<T, G><<<blocks, kThreads, 0, stream>>>(a.first, a.second);
  }
};

template <class T, int G>
struct LaunchLogprobsBackward {
  static void run(unsigned blocks, const std::pair<LogprobsBackwardArgs, Temperature>& a, cudaStream_t stream) {
    logprobsBackwardKernel<T, G><<<blocks, kThreads, 0, stream>>>(a.first, a.second);
  }
};

template <class T, int G>
struct LaunchActorStats {
  static void run(unsigned blocks, const ActorRows& a, cudaStream_t stream) {
    actorStatsKernel<T, G><<<blocks, kThreads, 0, stream>>>(a);
  }
};

template <class T, int G>
struct LaunchActorGrad {
  static void run(unsigned blocks, const ActorRows& a, cudaStream_t stream) {
    actorGradKernel<T, G><<<blocks, kThreads, 0, stream>>>(a);
  }
};

// --- first invalid label ----------------------------------------------------------------------

constexpr unsigned long long kNone = ULLONG_MAX;

// As firstNonFiniteKernel (statistics.cu): each block's first bad index, met in an integer
// atomicMin that gives the same result in any order.
__global__ void __launch_bounds__(kThreads) firstInvalidLabelKernel(const int32_t* labels, int64_t n, int64_t V,
                                                                    int32_t ignoreIndex, unsigned long long* first) {
  constexpr int kItems = static_cast<int>(kMomentsBlock / kThreads);
  __shared__ unsigned long long warpFirst[kWarps];
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kMomentsBlock;
  unsigned long long mine = kNone;
#pragma unroll
  for (int k = kItems - 1; k >= 0; --k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < n && labels[i] != ignoreIndex && !labelInRange(labels[i], V)) mine = static_cast<unsigned long long>(i);
  }
  for (int offset = 16; offset > 0; offset /= 2) mine = min(mine, __shfl_down_sync(kFullMask, mine, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warpFirst[warp] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long blockFirst = kNone;
    for (int w = 0; w < kWarps; ++w) blockFirst = min(blockFirst, warpFirst[w]);
    if (blockFirst != kNone) atomicMin(first, blockFirst);
  }
}

// --- KL penalties -----------------------------------------------------------------------------

// Grid-stride loops: the grid is capped, each thread taking several elements when n is large.
constexpr int64_t kMaxGridBlocks = 65536;

unsigned gridFor(int64_t n) { return static_cast<unsigned>(std::min(ceilDiv(n, kThreads), kMaxGridBlocks)); }

__global__ void __launch_bounds__(kThreads) klPenaltyKernel(const KlPenaltyArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < a.n; i += stride) {
    const KlValue k = klOf(static_cast<double>(a.logprobs[i]) - a.refLogprobs[i], a.o);
    a.kl[i] = static_cast<float>(k.kl);
    a.grad[i] = static_cast<float>(k.grad);
  }
}

// --- items: a warp's share of a [B,T] loss --------------------------------------------------
// Row b's tokens are cut into S = ceil(T / kItemTokens) items; item b*S + s covers tokens
// [s*kItemTokens, min(T, (s+1)*kItemTokens)) and lane l takes tokens l, l+32, ... of it, so
// that every load of the warp is contiguous. Many short rows and one long row alike give
// the GPU thousands of warps.

constexpr int64_t kItemTokens = 512;

struct Items {
  int64_t B, T, S, count;
};

Items planItems(int64_t B, int64_t T) {
  const int64_t S = ceilDiv(T, kItemTokens);
  return {B, T, S, B * S};
}

// The item and row kernels have no grid stride: a warp per item (or row; there are at least
// as many items as rows), kWarps a block, so the grid's 2^31 - 1 blocks bound the items. At
// the bound, 1.7e10 items of at least one token, with the scratch each takes (a count, and a
// partial of 64-72 bytes or a last index), are more than one GPU holds (at least 17 bytes
// each: 290 GB).
void requireItems(const char* op, int64_t B, int64_t T) {
  detail::requireAtMost(op, "B * ceil(T / 512)", B * ceilDiv(T, kItemTokens), detail::kMaxGridX * kWarps);
}

unsigned warpBlocks(int64_t warps) { return static_cast<unsigned>(ceilDiv(warps, kWarps)); }

// This warp's item, or false when the warp has none (warp-uniform).
struct ItemSpan {
  int64_t item, b, t0, t1;
  int lane;
};

__device__ bool warpItem(const Items& it, ItemSpan& s) {
  s.item = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (s.item >= it.count) return false;
  s.b = s.item / it.S;
  s.t0 = (s.item % it.S) * kItemTokens;
  s.t1 = s.t0 + kItemTokens < it.T ? s.t0 + kItemTokens : it.T;
  s.lane = static_cast<int>(threadIdx.x % 32);
  return true;
}

__device__ double combine(double a, double b) { return a + b; }

// A fixed shuffle tree over the warp; the result is in lane 0.
template <class P>
__device__ P warpCombine(P p) {
  for (int offset = 16; offset > 0; offset /= 2) p = combine(p, shuffleDownWords(p, offset));
  return p;
}

__device__ int64_t warpMax(int64_t x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const int64_t other = __shfl_down_sync(kFullMask, x, offset);
    x = other > x ? other : x;
  }
  return x;
}

__device__ int32_t warpSum(int32_t x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

// Per row of the loss: its aggregation weight and its number of valid tokens.
struct RowInfo {
  double weight, valid;
};

// Which tokens count: mask (or all) and, for the actor, a label that is not ignoreIndex.
struct Validity {
  const uint8_t* mask;
  const int32_t* labels;
  int32_t ignoreIndex;
  __device__ bool operator()(int64_t i) const {
    return (mask == nullptr || mask[i] != 0) && (labels == nullptr || labels[i] != ignoreIndex);
  }
};

__global__ void __launch_bounds__(kThreads) countItemsKernel(const Items it, const Validity valid, int32_t* counts) {
  ItemSpan s;
  if (!warpItem(it, s)) return;
  int32_t n = 0;
  for (int64_t t = s.t0 + s.lane; t < s.t1; t += 32) n += valid(s.b * it.T + t) ? 1 : 0;
  n = warpSum(n);
  if (s.lane == 0) counts[s.item] = n;
}

// A warp per row: the sum of the row's S item values (`stride` doubles apart) in a fixed tree,
// divided by max(n_b, 1).
__global__ void __launch_bounds__(kThreads) rowMeanKernel(const double* values, int64_t stride, const Items it,
                                                          const RowInfo* rows, double* out) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (b >= it.B) return;
  double sum = 0;
  for (int64_t s = lane; s < it.S; s += 32) sum += values[(b * it.S + s) * stride];
  sum = warpCombine(sum);
  if (lane == 0) out[b] = sum / fmax(rows[b].valid, 1.0);
}

// The batch's valid tokens and rows with at least one, summed on the device.
struct RowTotals {
  unsigned long long valid, nonEmpty;
};

// A warp per row: its valid tokens, the sum of its items' counts (T for every row when
// itemCounts is null: no mask), added to the batch's totals. The totals are integers, so the
// atomics' order cannot change them; a block adds its rows' share once.
__global__ void __launch_bounds__(kThreads)
    rowCountsKernel(const int32_t* itemCounts, const Items it, RowInfo* rows, RowTotals* totals) {
  __shared__ unsigned long long blockValid[kWarps], blockNonEmpty[kWarps];
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  int64_t n = 0;
  if (b < it.B) {
    if (itemCounts == nullptr) {
      n = it.T;
    } else {
      for (int64_t s = lane; s < it.S; s += 32) n += itemCounts[b * it.S + s];
      for (int offset = 16; offset > 0; offset /= 2) n += __shfl_down_sync(kFullMask, n, offset);
    }
    if (lane == 0) rows[b].valid = static_cast<double>(n);
  }
  if (lane == 0) {
    blockValid[warp] = static_cast<unsigned long long>(n);
    blockNonEmpty[warp] = n > 0 ? 1 : 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long valid = 0, nonEmpty = 0;
    for (int w = 0; w < kWarps; ++w) {
      valid += blockValid[w];
      nonEmpty += blockNonEmpty[w];
    }
    atomicAdd(&totals->valid, valid);
    atomicAdd(&totals->nonEmpty, nonEmpty);
  }
}

// Each row's aggregation weight, by the aggregationRowWeight every backend calls: the same
// double operations as on the host (the CUDA build does not contract them into FMAs).
__global__ void __launch_bounds__(kThreads) rowWeightsKernel(const Items it, Aggregation mode, double normalizer,
                                                             const RowTotals* totals, RowInfo* rows) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (b >= it.B) return;
  rows[b].weight = aggregationRowWeight(mode, normalizer, rows[b].valid, static_cast<double>(totals->valid),
                                        static_cast<double>(totals->nonEmpty), static_cast<double>(it.B));
}

// Counts each row's valid tokens and gives every row its aggregation weight, all on the device:
// a round trip through the host here cost more than the loss kernels themselves.
void planRows(const Items& it, const Validity& valid, Aggregation mode, double normalizer, int32_t* itemCounts,
              RowInfo* rows, RowTotals* totals, cudaStream_t stream) {
  const bool counted = valid.mask != nullptr || valid.labels != nullptr;
  if (counted) {
    countItemsKernel<<<warpBlocks(it.count), kThreads, 0, stream>>>(it, valid, itemCounts);
    detail::checkLaunch("valid-token counts");
  }
  detail::check(cudaMemsetAsync(totals, 0, sizeof(RowTotals), stream), "valid-token totals");
  rowCountsKernel<<<warpBlocks(it.B), kThreads, 0, stream>>>(counted ? itemCounts : nullptr, it, rows, totals);
  detail::checkLaunch("valid-token counts");
  rowWeightsKernel<<<static_cast<unsigned>(ceilDiv(it.B, kThreads)), kThreads, 0, stream>>>(it, mode, normalizer,
                                                                                           totals, rows);
  detail::checkLaunch("row weights");
}

// The batch's valid tokens, once the stream has reached this point.
double validTokens(const RowTotals* totals, cudaStream_t stream) {
  RowTotals host;
  toHost(&host, totals, sizeof(host), stream, "valid-token totals to host");
  return static_cast<double>(host.valid);
}

// --- deterministic reduction of partial results -----------------------------------------------

constexpr int kReduceItems = 8;
constexpr int64_t kReduceBlock = static_cast<int64_t>(kThreads) * kReduceItems;

// Each block combines up to kReduceBlock partials: kReduceItems per thread, kThreads apart,
// then a fixed tree in shared memory.
template <class P>
__global__ void __launch_bounds__(kThreads) reducePartialsKernel(const P* in, int64_t count, P* out) {
  __shared__ P tree[kThreads];
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kReduceBlock;
  P acc{};
  for (int k = 0; k < kReduceItems; ++k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < count) acc = combine(acc, in[i]);
  }
  tree[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) tree[threadIdx.x] = combine(tree[threadIdx.x], tree[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = tree[0];
}

int64_t spareFor(int64_t count) { return ceilDiv(count, kReduceBlock); }

// Reduces count >= 1 partials level by level; `spare` holds spareFor(count) of them. Waits
// for the result.
template <class P>
P reduceToHost(P* in, P* spare, int64_t count, cudaStream_t stream, const char* name) {
  P* out = spare;
  while (count > 1) {
    const int64_t next = spareFor(count);
    reducePartialsKernel<P><<<static_cast<unsigned>(next), kThreads, 0, stream>>>(in, count, out);
    detail::checkLaunch(name);
    std::swap(in, out);
    count = next;
  }
  P result;
  toHost(&result, in, sizeof(P), stream, "loss partials to host");
  return result;
}

// --- the PPO policy loss (and the actor's terms) ------------------------------------------------

// Sums over an item's valid tokens; loss, ent and kl already weighted by the row's weight.
struct PolicyPartial {
  double loss, clipped, lower, kl2, kl3, klp, ent, kl, gradSum;
};

__device__ PolicyPartial combine(const PolicyPartial& a, const PolicyPartial& b) {
  return {a.loss + b.loss, a.clipped + b.clipped, a.lower + b.lower, a.kl2 + b.kl2, a.kl3 + b.kl3,
          a.klp + b.klp,   a.ent + b.ent,         a.kl + b.kl,       a.gradSum + b.gradSum};
}

struct PolicyPass {
  Items it;
  Validity valid;
  const float* logprobs;
  const float* oldLogprobs;
  const float* advantages;
  bool advantagesPerRow;
  PolicyLossOptions o;
  const RowInfo* rows;
  const double* seqD;  // [B], Sequence importance only
  // The actor's terms: entropy (null: none) and the KL to the reference (null: none).
  const float* entropy;
  const float* refLogprobs;
  float klCoef, entropyCoef;
  KlOptions kl;
  float* gradLp;  // [B,T]: d loss / d lp (Sequence: the KL part only, the rest comes later)
  float* gradH;   // [B,T] or null
  PolicyPartial* partials;  // [items]
};

// Sequence importance: the sum of each item's log-ratios, for the rows' masked means.
__global__ void __launch_bounds__(kThreads) itemLogRatioKernel(const PolicyPass p, double* itemD) {
  ItemSpan s;
  if (!warpItem(p.it, s)) return;
  double sum = 0;
  for (int64_t t = s.t0 + s.lane; t < s.t1; t += 32) {
    const int64_t i = s.b * p.it.T + t;
    if (p.valid(i)) sum += static_cast<double>(p.logprobs[i]) - p.oldLogprobs[i];
  }
  sum = warpCombine(sum);
  if (s.lane == 0) itemD[s.item] = sum;
}

// A lane's tokens go kTokenBatch at a time: the batch's loads are issued before any of its
// stores. The stores (gradients) could alias the inputs as far as the compiler knows, so in a
// plain loop each token's loads waited for the previous token's store: one memory latency per
// token. The order in which a lane adds its tokens is unchanged. On an H200, with the row plan
// moved to the device too, [B=16384,T=1024]: policy loss 584 -> 354 us, value loss 439 -> 201.
constexpr int kTokenBatch = 4;

// The inputs of one token of the policy loss.
struct PolicyToken {
  bool valid;
  float lp, old, adv, ent, ref;
};

__device__ void loadPolicyToken(const PolicyPass& p, int64_t b, int64_t i, PolicyToken& x) {
  x.valid = p.valid(i);
  x.lp = p.logprobs[i];
  x.old = p.oldLogprobs[i];
  x.adv = p.advantagesPerRow ? p.advantages[b] : p.advantages[i];
  if (p.entropy != nullptr) x.ent = p.entropy[i];
  if (p.refLogprobs != nullptr) x.ref = p.refLogprobs[i];
}

// Per token as the reference's policyTokens (and the actor's loop after it), in float64.
__global__ void __launch_bounds__(kThreads) policyItemsKernel(const PolicyPass p) {
  ItemSpan s;
  if (!warpItem(p.it, s)) return;
  const PolicyLossOptions& o = p.o;
  const bool sequence = o.importance == ImportanceLevel::Sequence;
  const double w = p.rows[s.b].weight;
  PolicyPartial acc{};
  double loss = 0, ent = 0, kl = 0;
  for (int64_t first = s.t0 + s.lane; first < s.t1; first += 32 * kTokenBatch) {
    PolicyToken batch[kTokenBatch];
#pragma unroll
    for (int k = 0; k < kTokenBatch; ++k) {
      const int64_t t = first + 32 * k;
      if (t < s.t1) loadPolicyToken(p, s.b, s.b * p.it.T + t, batch[k]);
    }
#pragma unroll
    for (int k = 0; k < kTokenBatch; ++k) {
      const int64_t t = first + 32 * k;
      if (t >= s.t1) break;
      const int64_t i = s.b * p.it.T + t;
      const PolicyToken& x = batch[k];
      if (!x.valid) {
        p.gradLp[i] = 0.0f;
        if (p.gradH != nullptr) p.gradH[i] = 0.0f;
        continue;
      }
      const double lp = x.lp, old = x.old;
      const double A = x.adv;
      const double dRaw = sequence ? p.seqD[s.b] : lp - old;
      const bool clampActive = fabs(dRaw) > o.clampLogRatio;
      const double d = clampSym(dRaw, o.clampLogRatio);
      const double r = exp(d);
      const TokenLoss tl = tokenLoss(r, A, o);
      loss += tl.l;
      // d(w l)/d(log-ratio), 0 wherever dl/dr is 0 (even where r overflowed to inf).
      const double g = clampActive || tl.dldr == 0 ? 0.0 : w * tl.dldr * r;
      const bool counted = o.clipfracMode == ClipfracMode::Branch ? tl.clippedWins
                                                                 : (r < 1.0 - o.clipLow || r > 1.0 + o.clipHigh);
      acc.clipped += counted ? 1 : 0;
      acc.lower += tl.lowerActive ? 1 : 0;
      // The KL stats always take the token's own (clamped) log-ratio: at token level that is d,
      // whose exp is r already.
      const double dt = clampSym(lp - old, o.clampLogRatio);
      acc.kl2 += 0.5 * dt * dt;
      acc.kl3 += (sequence ? exp(dt) : r) - 1 - dt;
      acc.klp += -dt;
      double gradLp = sequence ? 0.0 : g;
      if (sequence) acc.gradSum += g;
      if (p.entropy != nullptr) {
        ent += x.ent;
        p.gradH[i] = static_cast<float>(-static_cast<double>(p.entropyCoef) * w);
      }
      if (p.refLogprobs != nullptr) {
        const KlValue k = klOf(lp - x.ref, p.kl);
        kl += k.kl;
        gradLp += static_cast<double>(p.klCoef) * w * k.grad;
      }
      p.gradLp[i] = static_cast<float>(gradLp);
    }
  }
  acc.loss = loss;
  acc.ent = ent;
  acc.kl = kl;
  acc = warpCombine(acc);
  if (s.lane == 0) {
    acc.loss *= w;
    acc.ent *= w;
    acc.kl *= w;
    p.partials[s.item] = acc;
  }
}

// Sequence importance: every valid token of row b gets the row's summed d(w l)/d(log-ratio)
// times d seqD / d lp = 1/max(n_b, 1), added to its KL part.
__global__ void __launch_bounds__(kThreads) sequenceGradKernel(const PolicyPass p, const double* rowGrad) {
  ItemSpan s;
  if (!warpItem(p.it, s)) return;
  for (int64_t t = s.t0 + s.lane; t < s.t1; t += 32) {
    const int64_t i = s.b * p.it.T + t;
    if (p.valid(i)) p.gradLp[i] = static_cast<float>(rowGrad[s.b] + static_cast<double>(p.gradLp[i]));
  }
}

// Scratch of the policy and actor losses.
struct PolicyScratch {
  int32_t* itemCounts;
  RowInfo* rows;
  RowTotals* totals;
  double* itemD;    // Sequence
  double* rowMean;  // Sequence: seqD, then the rows' gradients
  PolicyPartial* partials;
  PolicyPartial* spare;
};

PolicyScratch carvePolicy(Carver& c, const Items& it, bool sequence) {
  PolicyScratch s;
  s.itemCounts = c.take<int32_t>(it.count);
  s.rows = c.take<RowInfo>(it.B);
  s.totals = c.take<RowTotals>(1);
  s.itemD = c.take<double>(sequence ? it.count : 0);
  s.rowMean = c.take<double>(sequence ? it.B : 0);
  s.partials = c.take<PolicyPartial>(it.count);
  s.spare = c.take<PolicyPartial>(spareFor(it.count));
  return s;
}

// The passes shared by policyLoss and actorLoss once the rows' weights are on the device;
// returns the summed partials.
PolicyPartial runPolicy(PolicyPass p, const PolicyScratch& s, cudaStream_t stream) {
  const unsigned blocks = warpBlocks(p.it.count);
  const unsigned rowBlocks = warpBlocks(p.it.B);
  const bool sequence = p.o.importance == ImportanceLevel::Sequence;
  p.partials = s.partials;
  if (sequence) {
    itemLogRatioKernel<<<blocks, kThreads, 0, stream>>>(p, s.itemD);
    detail::checkLaunch("policy loss (sequence log-ratios)");
    rowMeanKernel<<<rowBlocks, kThreads, 0, stream>>>(s.itemD, 1, p.it, p.rows, s.rowMean);
    detail::checkLaunch("policy loss (sequence log-ratios)");
    p.seqD = s.rowMean;
  }
  policyItemsKernel<<<blocks, kThreads, 0, stream>>>(p);
  detail::checkLaunch("policy loss");
  if (sequence) {
    // seqD has been read by every token: its buffer takes the rows' gradients.
    const double* gradSums = reinterpret_cast<const double*>(reinterpret_cast<const char*>(s.partials) +
                                                             offsetof(PolicyPartial, gradSum));
    rowMeanKernel<<<rowBlocks, kThreads, 0, stream>>>(gradSums, sizeof(PolicyPartial) / sizeof(double), p.it,
                                                     p.rows, s.rowMean);
    detail::checkLaunch("policy loss (sequence gradient)");
    sequenceGradKernel<<<blocks, kThreads, 0, stream>>>(p, s.rowMean);
    detail::checkLaunch("policy loss (sequence gradient)");
  }
  return reduceToHost(s.partials, s.spare, p.it.count, stream, "policy loss (reduction)");
}

PolicyLossStats policyStats(const PolicyPartial& sum, double validTokens) {
  const double n = validTokens;
  PolicyLossStats st;
  st.loss = sum.loss;
  st.clipfrac = n > 0 ? sum.clipped / n : 0;
  st.clipfracLower = n > 0 ? sum.lower / n : 0;
  st.approxKl = n > 0 ? sum.kl2 / n : 0;
  st.approxKlK3 = n > 0 ? sum.kl3 / n : 0;
  st.ppoKl = n > 0 ? sum.klp / n : 0;
  return st;
}

// --- the value loss -----------------------------------------------------------------------------

// One lane's values as sums shifted by its first value K, so that m2 = s2 - s1^2/c loses
// nothing that matters (as statistics.cu).
struct ShiftedSums {
  double K = 0, count = 0, s1 = 0, s2 = 0;
  __device__ void add(double x) {
    if (count == 0) K = x;
    const double d = x - K;
    count += 1;
    s1 += d;
    s2 += d * d;
  }
  __device__ Moments moments() const {
    if (count == 0) return {0, 0, 0};
    const double m2 = s2 - s1 * (s1 / count);
    return {count, K + s1 / count, m2 < 0 ? 0.0 : m2};  // rounding can dip below 0; NaN stays
  }
};

struct ValuePartial {
  double loss, clipped;
  Moments returns, error;  // of R and of R - v
};

__device__ ValuePartial combine(const ValuePartial& a, const ValuePartial& b) {
  return {a.loss + b.loss, a.clipped + b.clipped, combine(a.returns, b.returns), combine(a.error, b.error)};
}

__global__ void __launch_bounds__(kThreads)
    valueItemsKernel(const ValueLossArgs a, const Items it, const RowInfo* rows, ValuePartial* partials) {
  ItemSpan s;
  if (!warpItem(it, s)) return;
  const double w = rows[s.b].weight;
  const bool clip = a.clip != kNoClamp;
  double loss = 0, clipped = 0;
  ShiftedSums returns, error;
  for (int64_t first = s.t0 + s.lane; first < s.t1; first += 32 * kTokenBatch) {
    float vs[kTokenBatch], Rs[kTokenBatch], olds[kTokenBatch];
    bool valid[kTokenBatch];
#pragma unroll
    for (int k = 0; k < kTokenBatch; ++k) {
      const int64_t t = first + 32 * k;
      if (t >= s.t1) continue;
      const int64_t i = s.b * it.T + t;
      valid[k] = a.mask == nullptr || a.mask[i] != 0;
      vs[k] = a.values[i];
      Rs[k] = a.returns[i];
      if (clip) olds[k] = a.oldValues[i];
    }
#pragma unroll
    for (int k = 0; k < kTokenBatch; ++k) {
      const int64_t t = first + 32 * k;
      if (t >= s.t1) break;
      const int64_t i = s.b * it.T + t;
      if (!valid[k]) {
        a.grad[i] = 0.0f;
        continue;
      }
      const double v = vs[k], R = Rs[k];
      const double unclipped = (v - R) * (v - R);
      double l = unclipped, dldv = 2 * (v - R);
      if (clip) {
        const double lo = olds[k] - static_cast<double>(a.clip), hi = olds[k] + static_cast<double>(a.clip);
        // A NaN old value reaches the loss and the gradient (fmin/fmax would drop it).
        const double vc = isNan(lo) ? NAN : (v < lo ? lo : (v > hi ? hi : v));
        const double clippedLoss = (vc - R) * (vc - R);
        if (clippedLoss > unclipped) {
          l = clippedLoss;
          dldv = (v < lo || v > hi) ? 0.0 : 2 * (v - R);
          clipped += 1;
        } else if (isNan(clippedLoss)) {
          l = NAN;
          dldv = NAN;
        }
      }
      loss += l;
      a.grad[i] = static_cast<float>(0.5 * w * dldv);
      returns.add(R);
      error.add(R - v);
    }
  }
  ValuePartial p{loss, clipped, returns.moments(), error.moments()};
  p = warpCombine(p);
  if (s.lane == 0) {
    p.loss *= w;
    partials[s.item] = p;
  }
}

// --- reward shaping -----------------------------------------------------------------------------

// rewards = -klCoef*kl on valid tokens, 0 elsewhere; each item's last valid t (or -1).
__global__ void __launch_bounds__(kThreads)
    shapeItemsKernel(const ShapeRewardsArgs a, const Items it, int64_t* itemLast) {
  ItemSpan s;
  if (!warpItem(it, s)) return;
  int64_t last = -1;
  for (int64_t t = s.t0 + s.lane; t < s.t1; t += 32) {
    const int64_t i = s.b * it.T + t;
    // Worked out whatever the mask and then selected, so that the kl load need not wait for the
    // mask's.
    const float shaped = static_cast<float>(-static_cast<double>(a.klCoef) * a.kl[i]);
    const bool valid = a.mask[i] != 0;
    a.rewards[i] = valid ? shaped : 0.0f;
    if (valid) last = t;
  }
  last = warpMax(last);
  if (s.lane == 0) itemLast[s.item] = last;
}

// A warp per row: the row's last valid token, then the score at the placement's position.
__global__ void __launch_bounds__(kThreads)
    shapeRowsKernel(const ShapeRewardsArgs a, const Items it, const int64_t* itemLast) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (b >= a.B) return;
  int64_t last = -1;
  for (int64_t s = lane; s < it.S; s += 32) last = itemLast[b * it.S + s] > last ? itemLast[b * it.S + s] : last;
  last = warpMax(last);
  if (lane != 0) return;
  double score = a.scores[b];
  if (a.hasEos != nullptr && a.hasEos[b] == 0) score -= a.missingEosPenalty;
  score = clampSym(score, a.scoreClip);
  int64_t at = last;
  if (a.placement == ScorePlacement::AfterLast) at = last + 1 < a.T ? last + 1 : last;
  if (at >= 0) a.rewards[b * a.T + at] = static_cast<float>(a.rewards[b * a.T + at] + score);
}

}  // namespace

// --- launchers ----------------------------------------------------------------------------------

void logprobs(const LogprobsArgs& a, int device) {
  requireSize("logprobs", "N", a.N);
  requireSize("logprobs", "V", a.V);
  detail::requireAtMost("logprobs", "N", a.N, maxLogitRows(a.V));
  requireDtype(a.dtype, "logprobs");
  const cudaStream_t stream = detail::activate(device);
  if (a.N == 0) return;
  requirePointer(a.labels, "logprobs", "labels");
  requirePointer(a.logprobs, "logprobs", "logprobs");
  if (a.V > 0) requirePointer(a.logits, "logprobs", "logits");
  launchRows<LaunchLogprobs>(a.dtype, a.N, a.V, std::make_pair(a, temperature(a.temperature)), stream, "logprobs");
}

void logprobsBackward(const LogprobsBackwardArgs& a, int device) {
  requireSize("logprobsBackward", "N", a.N);
  requireSize("logprobsBackward", "V", a.V);
  detail::requireAtMost("logprobsBackward", "N", a.N, maxLogitRows(a.V));
  requireDtype(a.dtype, "logprobsBackward");
  const cudaStream_t stream = detail::activate(device);
  if (a.N == 0 || a.V == 0) return;  // no gradient element to write
  requirePointer(a.logits, "logprobsBackward", "logits");
  requirePointer(a.labels, "logprobsBackward", "labels");
  requirePointer(a.gradLogprobs, "logprobsBackward", "gradLogprobs");
  requirePointer(a.gradLogits, "logprobsBackward", "gradLogits");
  launchRows<LaunchLogprobsBackward>(a.dtype, a.N, a.V, std::make_pair(a, temperature(a.temperature)), stream,
                                     "logprobsBackward");
}

int64_t firstInvalidLabel(const int32_t* labels, int64_t n, int64_t V, int32_t ignoreIndex, int device) {
  requireSize("firstInvalidLabel", "length", n);
  // A block per kMomentsBlock labels: 8.8e12 labels at most, 32 TiB, past any one GPU.
  detail::requireAtMost("firstInvalidLabel", "n", n, detail::kMaxGridX * kMomentsBlock);
  const cudaStream_t stream = detail::activate(device);
  if (n == 0) return -1;
  requirePointer(labels, "firstInvalidLabel", "labels");
  detail::ScratchLease scratch(device, sizeof(unsigned long long));
  auto* first = static_cast<unsigned long long*>(scratch.data());
  detail::check(cudaMemsetAsync(first, 0xff, sizeof(*first), stream), "cudaMemsetAsync");  // kNone
  const int64_t blocks = ceilDiv(n, kMomentsBlock);
  firstInvalidLabelKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(labels, n, V, ignoreIndex, first);
  detail::checkLaunch("firstInvalidLabel");
  unsigned long long result = kNone;
  toHost(&result, first, sizeof(result), stream, "firstInvalidLabel (index to host)");
  return result == kNone ? -1 : static_cast<int64_t>(result);
}

void klPenalty(const KlPenaltyArgs& a, int device) {
  requireSize("klPenalty", "length", a.n);
  const cudaStream_t stream = detail::activate(device);
  if (a.n == 0) return;
  requirePointer(a.logprobs, "klPenalty", "logprobs");
  requirePointer(a.refLogprobs, "klPenalty", "refLogprobs");
  requirePointer(a.kl, "klPenalty", "kl");
  requirePointer(a.grad, "klPenalty", "grad");
  klPenaltyKernel<<<gridFor(a.n), kThreads, 0, stream>>>(a);
  detail::checkLaunch("klPenalty");
}

void shapeRewards(const ShapeRewardsArgs& a, int device) {
  requireSize("shapeRewards", "B", a.B);
  requireSize("shapeRewards", "T", a.T);
  requireItems("shapeRewards", a.B, a.T);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0) return;
  requirePointer(a.scores, "shapeRewards", "scores");
  // T = 0: no token to write; the rows' scores have nowhere to go.
  if (a.T == 0) return;
  requirePointer(a.kl, "shapeRewards", "kl");
  requirePointer(a.mask, "shapeRewards", "mask");
  requirePointer(a.rewards, "shapeRewards", "rewards");
  const Items it = planItems(a.B, a.T);
  detail::ScratchLease scratch(device, static_cast<size_t>(it.count) * sizeof(int64_t));
  auto* itemLast = static_cast<int64_t*>(scratch.data());
  shapeItemsKernel<<<warpBlocks(it.count), kThreads, 0, stream>>>(a, it, itemLast);
  detail::checkLaunch("shapeRewards");
  shapeRowsKernel<<<warpBlocks(a.B), kThreads, 0, stream>>>(a, it, itemLast);
  detail::checkLaunch("shapeRewards (scores)");
}

PolicyLossStats policyLoss(const PolicyLossArgs& a, int device) {
  requireSize("policyLoss", "B", a.B);
  requireSize("policyLoss", "T", a.T);
  requireItems("policyLoss", a.B, a.T);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0 || a.T == 0) return PolicyLossStats{};
  requirePointer(a.logprobs, "policyLoss", "logprobs");
  requirePointer(a.oldLogprobs, "policyLoss", "oldLogprobs");
  requirePointer(a.advantages, "policyLoss", "advantages");
  requirePointer(a.grad, "policyLoss", "grad");

  const Items it = planItems(a.B, a.T);
  const bool sequence = a.o.importance == ImportanceLevel::Sequence;
  Carver sizing(nullptr);
  carvePolicy(sizing, it, sequence);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  const PolicyScratch s = carvePolicy(carver, it, sequence);

  PolicyPass p{};
  p.it = it;
  p.valid = {a.mask, nullptr, 0};
  p.logprobs = a.logprobs;
  p.oldLogprobs = a.oldLogprobs;
  p.advantages = a.advantages;
  p.advantagesPerRow = a.advantagesPerRow;
  p.o = a.o;
  p.rows = s.rows;
  p.gradLp = a.grad;
  planRows(it, p.valid, a.o.aggregation, a.o.normalizer, s.itemCounts, s.rows, s.totals, stream);
  const PolicyPartial sum = runPolicy(p, s, stream);
  return policyStats(sum, validTokens(s.totals, stream));
}

ValueLossStats valueLoss(const ValueLossArgs& a, int device) {
  requireSize("valueLoss", "B", a.B);
  requireSize("valueLoss", "T", a.T);
  requireItems("valueLoss", a.B, a.T);
  const cudaStream_t stream = detail::activate(device);
  ValueLossStats st;
  st.explainedVariance = NAN;  // nothing valid
  if (a.B == 0 || a.T == 0) return st;
  requirePointer(a.values, "valueLoss", "values");
  requirePointer(a.returns, "valueLoss", "returns");
  requirePointer(a.grad, "valueLoss", "grad");
  if (a.clip != kNoClamp) requirePointer(a.oldValues, "valueLoss", "oldValues");

  const Items it = planItems(a.B, a.T);
  auto carve = [&](Carver& c) {
    struct {
      int32_t* itemCounts;
      RowInfo* rows;
      RowTotals* totals;
      ValuePartial* partials;
      ValuePartial* spare;
    } s{c.take<int32_t>(it.count), c.take<RowInfo>(it.B), c.take<RowTotals>(1), c.take<ValuePartial>(it.count),
        c.take<ValuePartial>(spareFor(it.count))};
    return s;
  };
  Carver sizing(nullptr);
  carve(sizing);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  const auto s = carve(carver);

  const Validity valid{a.mask, nullptr, 0};
  planRows(it, valid, a.aggregation, a.normalizer, s.itemCounts, s.rows, s.totals, stream);
  valueItemsKernel<<<warpBlocks(it.count), kThreads, 0, stream>>>(a, it, s.rows, s.partials);
  detail::checkLaunch("valueLoss");
  const ValuePartial sum = reduceToHost(s.partials, s.spare, it.count, stream, "valueLoss (reduction)");
  const double n = validTokens(s.totals, stream);
  st.loss = 0.5 * sum.loss;
  st.vfClipfrac = n > 0 ? sum.clipped / n : 0;
  // Population variances: the ratio of the sums of squared deviations.
  st.explainedVariance = n > 0 && sum.returns.m2 > 0 ? 1 - sum.error.m2 / sum.returns.m2 : NAN;
  return st;
}

ActorLossStats actorLoss(const ActorLossArgs& a, int device) {
  requireSize("actorLoss", "B", a.B);
  requireSize("actorLoss", "T", a.T);
  requireSize("actorLoss", "V", a.V);
  requireItems("actorLoss", a.B, a.T);
  detail::requireAtMost("actorLoss", "B * T", a.B * a.T, maxLogitRows(a.V));
  requireDtype(a.dtype, "actorLoss");
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0 || a.T == 0) return ActorLossStats{};
  requirePointer(a.labels, "actorLoss", "labels");
  requirePointer(a.oldLogprobs, "actorLoss", "oldLogprobs");
  requirePointer(a.advantages, "actorLoss", "advantages");
  if (a.V > 0) {
    requirePointer(a.logits, "actorLoss", "logits");
    requirePointer(a.gradLogits, "actorLoss", "gradLogits");
  }

  const int64_t N = a.B * a.T;
  const Items it = planItems(a.B, a.T);
  const bool sequence = a.o.importance == ImportanceLevel::Sequence;
  const bool withKl = a.refLogprobs != nullptr && a.klCoef != 0;
  // O(B*T) scratch: the policy loss's, and per token the row statistics, lp and H (unless the
  // caller takes them) and the two gradient coefficients.
  auto carve = [&](Carver& c) {
    struct {
      PolicyScratch policy;
      RowStat* stats;
      float *lp, *H, *gLp, *gH;
    } s{carvePolicy(c, it, sequence), c.take<RowStat>(N), c.take<float>(a.logprobs ? 0 : N),
        c.take<float>(a.entropy ? 0 : N), c.take<float>(N), c.take<float>(N)};
    return s;
  };
  Carver sizing(nullptr);
  carve(sizing);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  const auto s = carve(carver);

  const Validity valid{a.mask, a.labels, a.ignoreIndex};
  planRows(it, valid, a.o.aggregation, a.o.normalizer, s.policy.itemCounts, s.policy.rows, s.policy.totals, stream);

  ActorRows rows{};
  rows.N = N;
  rows.V = a.V;
  rows.logits = a.logits;
  rows.labels = a.labels;
  rows.ignoreIndex = a.ignoreIndex;
  rows.mask = a.mask;
  rows.tau = temperature(a.temperature);
  rows.stats = s.stats;
  rows.logprobs = a.logprobs != nullptr ? a.logprobs : s.lp;
  rows.entropy = a.entropy != nullptr ? a.entropy : s.H;
  rows.gLp = s.gLp;
  rows.gH = s.gH;
  rows.gradLogits = a.gradLogits;
  launchRows<LaunchActorStats>(a.dtype, N, a.V, rows, stream, "actorLoss (log-probs)");

  PolicyPass p{};
  p.it = it;
  p.valid = valid;
  p.logprobs = rows.logprobs;
  p.oldLogprobs = a.oldLogprobs;
  p.advantages = a.advantages;
  p.advantagesPerRow = a.advantagesPerRow;
  p.o = a.o;
  p.rows = s.policy.rows;
  p.entropy = rows.entropy;
  p.refLogprobs = withKl ? a.refLogprobs : nullptr;
  p.klCoef = a.klCoef;
  p.entropyCoef = a.entropyCoef;
  p.kl = a.klOptions;
  p.gradLp = s.gLp;
  p.gradH = s.gH;
  const PolicyPartial sum = runPolicy(p, s.policy, stream);
  const double n = validTokens(s.policy.totals, stream);

  // The logits' gradient, the largest pass, is enqueued after the scalars were read back: the
  // host has them while it runs, and the copies that follow on the stream wait for it.
  if (a.V > 0) launchRows<LaunchActorGrad>(a.dtype, N, a.V, rows, stream, "actorLoss (gradient)");

  ActorLossStats st;
  st.policy = policyStats(sum, n);
  st.entropy = sum.ent;
  st.kl = withKl ? sum.kl : 0;
  st.loss = st.policy.loss + (withKl ? static_cast<double>(a.klCoef) * st.kl : 0.0) -
            static_cast<double>(a.entropyCoef) * st.entropy;
  return st;
}

}  // namespace cuda
}  // namespace rlhf
