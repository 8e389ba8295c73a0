// CUDA masked moments, the affine map of whitening, and the index of the first non-finite
// element. The reductions are deterministic: fixed-shape trees in a fixed order, no float
// atomics, so the same input gives the same bits run after run.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <utility>

#include "device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"

namespace rlhf {
namespace cuda {

namespace {

using detail::Moments;
using detail::combine;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Each block reduces kMomentsBlock elements (or partial results): kItems per thread, read
// kThreads apart so that every load of a warp is contiguous.
constexpr int kItems = static_cast<int>(kMomentsBlock / kThreads);
static_assert(kItems * kThreads == kMomentsBlock, "a block covers kMomentsBlock elements");

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void requireLength(const char* op, int64_t n) {
  if (n < 0) throw KernelError(ErrorKind::Range, std::string(op) + ": negative length " + std::to_string(n));
}

// The kernels with a block per kMomentsBlock elements (a fixed tree shape, or a fixed share of
// the search) take at most the grid's 2^31 - 1 blocks of them: 8.8e12 elements, 32 TiB of
// float32, more than any one GPU holds, so this never binds in practice.
constexpr int64_t kMaxBlockedLength = detail::kMaxGridX * kMomentsBlock;

// --- masked moments ---------------------------------------------------------------------------

__device__ Moments shuffleDown(const Moments& m, int offset) {
  return {__shfl_down_sync(kFullMask, m.count, offset), __shfl_down_sync(kFullMask, m.mean, offset),
          __shfl_down_sync(kFullMask, m.m2, offset)};
}

// Combines the kThreads values of a block in a fixed tree; the result is in thread 0.
__device__ Moments blockCombine(Moments m) {
  __shared__ Moments warpResults[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) m = combine(m, shuffleDown(m, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warpResults[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < kWarps ? warpResults[lane] : Moments{0, 0, 0};
    for (int offset = 16; offset > 0; offset /= 2) m = combine(m, shuffleDown(m, offset));
  }
  return m;
}

// One thread's elements: sums of (x - K) and (x - K)^2 in float64, shifted by the thread's
// first valid element K so that m2 = s2 - s1^2/c loses nothing that matters (as the CPU's
// block kernel does). Masked elements are skipped by a select, so a NaN there never enters.
__device__ Moments threadMoments(const float* x, const uint8_t* mask, int64_t n, int64_t start) {
  float xs[kItems];
  bool valid[kItems];
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    valid[k] = i < n && (mask == nullptr || mask[i] != 0);
    xs[k] = i < n ? x[i] : 0.0f;
  }
  double K = 0, count = 0, s1 = 0, s2 = 0;
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    if (!valid[k]) continue;
    if (count == 0) K = xs[k];
    const double d = static_cast<double>(xs[k]) - K;
    count += 1;
    s1 += d;
    s2 += d * d;
  }
  if (count == 0) return {0, 0, 0};
  const double m2 = s2 - s1 * (s1 / count);
  return {count, K + s1 / count, m2 < 0 ? 0.0 : m2};  // rounding can dip below 0; NaN stays
}

__global__ void __launch_bounds__(kThreads)
    momentsKernel(const float* x, const uint8_t* mask, int64_t n, Moments* partials) {
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kMomentsBlock;
  const Moments m = blockCombine(threadMoments(x, mask, n, start));
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

// Combines up to kMomentsBlock partial results into one per block.
__global__ void __launch_bounds__(kThreads)
    combinePartialsKernel(const Moments* in, int64_t count, Moments* out) {
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kMomentsBlock;
  Moments m{0, 0, 0};
  for (int k = 0; k < kItems; ++k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < count) m = combine(m, in[i]);
  }
  m = blockCombine(m);
  if (threadIdx.x == 0) out[blockIdx.x] = m;
}

// --- affine -----------------------------------------------------------------------------------

__device__ float affineOne(float x, const AffineArgs& a) { return (x - a.center) * a.scale + a.shift; }

// Grid-stride loops: the grid is capped, each thread taking several elements when n is large.
constexpr int64_t kMaxGridBlocks = 65536;

__global__ void __launch_bounds__(kThreads) affineKernel(const AffineArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < a.n; i += stride)
    a.out[i] = affineOne(a.x[i], a);
}

// Four elements per 16-byte load and store, for pointers that allow it; the last n % 4
// elements go one by one.
__global__ void __launch_bounds__(kThreads) affineVec4Kernel(const AffineArgs a) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t n4 = a.n / 4;
  const float4* x = reinterpret_cast<const float4*>(a.x);
  float4* out = reinterpret_cast<float4*>(a.out);
  for (int64_t i = first; i < n4; i += stride) {
    float4 v = x[i];
    v.x = affineOne(v.x, a);
    v.y = affineOne(v.y, a);
    v.z = affineOne(v.z, a);
    v.w = affineOne(v.w, a);
    out[i] = v;
  }
  for (int64_t i = n4 * 4 + first; i < a.n; i += stride) a.out[i] = affineOne(a.x[i], a);
}

// --- first non-finite element -----------------------------------------------------------------

constexpr unsigned long long kNone = ULLONG_MAX;

// By the bits, so that no compiler flag can make it assume finite values.
__device__ bool nonFinite(float v) { return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u; }

// Each block finds the first non-finite index of its kMomentsBlock elements; the blocks'
// answers meet in an integer atomicMin, which gives the same result in any order.
__global__ void __launch_bounds__(kThreads)
    firstNonFiniteKernel(const float* x, int64_t n, unsigned long long* first) {
  __shared__ unsigned long long warpFirst[kWarps];
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kMomentsBlock;
  unsigned long long mine = kNone;
#pragma unroll
  for (int k = kItems - 1; k >= 0; --k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < n && nonFinite(x[i])) mine = static_cast<unsigned long long>(i);
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

}  // namespace

MaskedMoments maskedMoments(const MaskedMomentsArgs& a, int device) {
  requireLength("maskedMoments", a.n);
  detail::requireAtMost("maskedMoments", "n", a.n, kMaxBlockedLength);
  const cudaStream_t stream = detail::activate(device);
  if (a.n == 0) return MaskedMoments{};
  if (a.x == nullptr) throw KernelError(ErrorKind::Internal, "maskedMoments: `x` is a null pointer");

  // Partials shrink by kMomentsBlock per level; two buffers, the first as large as level 0,
  // take turns as input and output.
  int64_t count = ceilDiv(a.n, kMomentsBlock);
  const int64_t second = ceilDiv(count, kMomentsBlock);
  detail::ScratchLease scratch(device, static_cast<size_t>(count + second) * sizeof(Moments));
  Moments* in = static_cast<Moments*>(scratch.data());
  Moments* out = in + count;
  momentsKernel<<<static_cast<unsigned>(count), kThreads, 0, stream>>>(a.x, a.mask, a.n, in);
  detail::checkLaunch("maskedMoments");
  while (count > 1) {
    const int64_t next = ceilDiv(count, kMomentsBlock);
    combinePartialsKernel<<<static_cast<unsigned>(next), kThreads, 0, stream>>>(in, count, out);
    detail::checkLaunch("maskedMoments (combine)");
    std::swap(in, out);
    count = next;
  }
  Moments result;
  detail::check(cudaMemcpyAsync(&result, in, sizeof(result), cudaMemcpyDeviceToHost, stream),
                "cudaMemcpyAsync (moments to host)");
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (moments)");
  MaskedMoments m;
  m.count = result.count;
  m.mean = result.mean;
  m.m2 = result.m2;
  return m;
}

void affine(const AffineArgs& a, int device) {
  requireLength("affine", a.n);
  const cudaStream_t stream = detail::activate(device);
  if (a.n == 0) return;
  if (a.x == nullptr || a.out == nullptr)
    throw KernelError(ErrorKind::Internal, "affine: `x` or `out` is a null pointer");
  const bool aligned = (reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.out)) % 16 == 0;
  const int64_t work = aligned ? std::max<int64_t>(a.n / 4, 1) : a.n;
  const unsigned blocks = static_cast<unsigned>(std::min(ceilDiv(work, kThreads), kMaxGridBlocks));
  if (aligned)
    affineVec4Kernel<<<blocks, kThreads, 0, stream>>>(a);
  else
    affineKernel<<<blocks, kThreads, 0, stream>>>(a);
  detail::checkLaunch("affine");
}

int64_t firstNonFinite(const float* x, int64_t n, int device) {
  requireLength("firstNonFinite", n);
  detail::requireAtMost("firstNonFinite", "n", n, kMaxBlockedLength);
  const cudaStream_t stream = detail::activate(device);
  if (n == 0) return -1;
  if (x == nullptr) throw KernelError(ErrorKind::Internal, "firstNonFinite: `x` is a null pointer");
  detail::ScratchLease scratch(device, sizeof(unsigned long long));
  auto* first = static_cast<unsigned long long*>(scratch.data());
  detail::check(cudaMemsetAsync(first, 0xff, sizeof(*first), stream), "cudaMemsetAsync");  // kNone
  const int64_t blocks = ceilDiv(n, kMomentsBlock);
  firstNonFiniteKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n, first);
  detail::checkLaunch("firstNonFinite");
  unsigned long long result = kNone;
  detail::check(cudaMemcpyAsync(&result, first, sizeof(result), cudaMemcpyDeviceToHost, stream),
                "cudaMemcpyAsync (index to host)");
  detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (firstNonFinite)");
  return result == kNone ? -1 : static_cast<int64_t>(result);
}

}  // namespace cuda
}  // namespace rlhf
