// CUDA kernels of the neural-network family (nn.h): the matrix multiply, bias and activation,
// embedding, layer norm, mean pooling, and the optimizer over a list of tensors.
//
//  - matmul: a tiled SGEMM of our own. A block computes a kTile x kTile tile of C (128, or 64
//    when 128-tiles would not give every SM a block) with 8x8 outputs per thread in registers;
//    op(A) and op(B) pass through shared memory in slices kK = 8 deep, double-buffered (the next
//    slice is loaded into registers while the current one is multiplied). Every C element is
//    one chain of float32 FMAs over k = 0..K-1 in order, whatever the tile, the grid or the
//    transposes: K is never split, there are no atomics, repeated runs give the same bits.
//    Expected speed (an estimate, not yet measured on a GPU): large products (4096^3) on the
//    128-tile, 2 blocks of 8 warps per SM at <= 128 registers, about 75-85% of the float32 FMA
//    peak on sm_80/sm_86-class parts and 55-70% on H100/H200, whose doubled FMA rate per SM
//    wants more warps than this tile gives; 512^3 has only 64 blocks of 64-tiles (one per SM on
//    half of an H200), about 15-25%; [128x64x64] is two blocks, bound by launch latency.
//  - Elementwise ops (biasAct, embedding, meanPool's backward, scale): grid-stride loops, the
//    per-element formulas of nn_math.h, so that an element is the reference's bits.
//  - Column sums (gradBias, gradGamma, gradBeta) in a fixed blocked order: a block covers 32
//    columns and kRowChunk rows; each warp sums kRowsPerWarp consecutive rows in row order in
//    float64, the block adds its warps in order, and a second kernel adds the chunks in order
//    into the accumulating output. The shape depends on rows and cols only: same bits each run.
//  - embeddingBackward: no float atomics. Table rows are split into kIdClasses classes by
//    id % kIdClasses; warp (class c, 32 columns) walks all ids in order and adds the gradient
//    rows of its class's ids, holding the current row in a register while the id repeats.
//    Every table row is owned by one thread per column and added to in the order i = 0..n-1,
//    exactly the reference's float32 sequence. Each warp reads all n ids (from shared
//    memory), which is cheap next to the gradient traffic for the n of a training batch.
//  - layerNorm and its backward: a warp per row, float64 sums in a fixed shuffle tree.
//  - meanPool: a thread per (b, d) summing t in order in float64, as the reference.
//  - adamw, sumSquares, scale: the list's pointers and sizes go to device scratch as one table;
//    each block takes one chunk of kNormBlock elements of one tensor (a binary search over the
//    tensors' first chunks). sumSquares sums its chunk in a fixed tree and the chunks' float64
//    partials are added on the host in order: the reference's block structure, so the results
//    agree to about 1e-12 relative and repeat bit for bit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../reference/nn_math.h"
#include "device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"
#include "rlhf/nn.h"

namespace rlhf {
namespace cuda {

namespace {

using detail::Carver;
using namespace nn_math;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Grid-stride loops launch at most this many blocks; more would only queue.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

__host__ __device__ int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned strideBlocks(int64_t n) { return static_cast<unsigned>(std::min(ceilDiv(n, kThreads), kMaxBlocks)); }

// --- preconditions: a null pointer or a negative size would fault on the device and poison the
// whole CUDA context, so they are caught on the host --------------------------------------------

void requireSize(const char* op, const char* name, int64_t n) {
  if (n < 0) throw KernelError(ErrorKind::Range, std::string(op) + ": negative " + name + " " + std::to_string(n));
}

void requirePointer(const void* p, const char* op, const char* name) {
  if (p == nullptr)
    throw KernelError(ErrorKind::Internal, std::string(op) + ": `" + name + "` is a null pointer");
}

void requireActivation(Activation act, const char* op) {
  const int32_t v = static_cast<int32_t>(act);
  if (v < 0 || v > static_cast<int32_t>(Activation::GeluTanh))
    throw KernelError(ErrorKind::Range, std::string(op) + ": unknown activation " + std::to_string(v));
}

__device__ int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ int64_t globalThread() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ int64_t gridThreads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// A float64 sum over the warp in a fixed butterfly: every lane gets the same bits, since each
// step adds the same two values (in either order) on both partners.
__device__ double warpAllSum(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

// ================================================================================================
// matmul
// ================================================================================================

constexpr int kK = 8;    // depth of a slice of op(A) and op(B) in shared memory
constexpr int kPad = 4;  // keeps float4 alignment and spreads the transposed stores over banks

// op(X) seen as `rows` x K (rows = M for A, N for B): element (r, k) lies at p[r*ld + k] when
// k is contiguous (A as stored, B transposed), else at p[k*ld + r].
struct Operand {
  const float* p;
  int64_t ld, rows;
  bool vec;  // 16-byte aligned with ld % 4 == 0: a group of 4 inside the matrix is one float4
};

__device__ float4 float4At(const float* p) { return *reinterpret_cast<const float4*>(p); }

// One slice of op(X) for a tile: kTile rows by kK k's, in float4 groups, kGroups per thread,
// held in registers between the load from global memory and the store to shared memory.
template <int kTile, bool kKContiguous>
struct SliceLoader {
  static constexpr int kBlockThreads = kTile * kTile / 64;
  static constexpr int kGroups = kTile * kK / 4 / kBlockThreads;
  float4 regs[kGroups];

  __device__ void load(const Operand& x, int64_t row0, int64_t k0, int64_t K) {
#pragma unroll
    for (int s = 0; s < kGroups; ++s) {
      const int g = static_cast<int>(threadIdx.x) + s * kBlockThreads;
      regs[s] = kKContiguous ? alongK(x, row0 + g / (kK / 4), k0 + (g % (kK / 4)) * 4, K)
                             : alongRows(x, row0 + (g % (kTile / 4)) * 4, k0 + g / (kTile / 4), K);
    }
  }

  // Shared memory holds the slice k-major: tile[k][r], rows contiguous for the multiply.
  __device__ void store(float (*tile)[kTile + kPad]) const {
#pragma unroll
    for (int s = 0; s < kGroups; ++s) {
      const int g = static_cast<int>(threadIdx.x) + s * kBlockThreads;
      if (kKContiguous) {
        const int r = g / (kK / 4), k = (g % (kK / 4)) * 4;
        tile[k][r] = regs[s].x;
        tile[k + 1][r] = regs[s].y;
        tile[k + 2][r] = regs[s].z;
        tile[k + 3][r] = regs[s].w;
      } else {
        *reinterpret_cast<float4*>(&tile[g / (kTile / 4)][(g % (kTile / 4)) * 4]) = regs[s];
      }
    }
  }

  // Elements (r, k..k+3); zero outside the matrix, so that padding adds nothing to the chains.
  __device__ static float4 alongK(const Operand& x, int64_t r, int64_t k, int64_t K) {
    if (r >= x.rows) return make_float4(0, 0, 0, 0);
    const float* p = x.p + r * x.ld + k;
    if (x.vec && k + 3 < K) return float4At(p);
    return make_float4(k < K ? p[0] : 0.0f, k + 1 < K ? p[1] : 0.0f, k + 2 < K ? p[2] : 0.0f, k + 3 < K ? p[3] : 0.0f);
  }

  // Elements (r..r+3, k).
  __device__ static float4 alongRows(const Operand& x, int64_t r, int64_t k, int64_t K) {
    if (k >= K) return make_float4(0, 0, 0, 0);
    const float* p = x.p + k * x.ld + r;
    if (x.vec && r + 3 < x.rows) return float4At(p);
    const int64_t n = x.rows;
    return make_float4(r < n ? p[0] : 0.0f, r + 1 < n ? p[1] : 0.0f, r + 2 < n ? p[2] : 0.0f, r + 3 < n ? p[3] : 0.0f);
  }
};

// A thread's outputs: rows ty*4 + {0..3} and kTile/2 + ty*4 + {0..3}, columns likewise with tx.
// The split halves keep a quarter-warp's float4 reads of shared memory on distinct banks.
template <int kTile>
__device__ int outputOffset(int t, int i) {
  return (i < 4 ? 0 : kTile / 2) + t * 4 + (i & 3);
}

template <int kTile>
__device__ void loadFragment(const float* row, int t, float (&f)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(row + t * 4);
  const float4 hi = *reinterpret_cast<const float4*>(row + kTile / 2 + t * 4);
  f[0] = lo.x, f[1] = lo.y, f[2] = lo.z, f[3] = lo.w;
  f[4] = hi.x, f[5] = hi.y, f[6] = hi.z, f[7] = hi.w;
}

// acc[i][j] += a[k][i] b[k][j] for the kK k's of the slice, in k order, as explicit FMAs (the
// build compiles with --fmad=false so that nothing else is contracted).
template <int kTile>
__device__ void multiplySlice(const float (*as)[kTile + kPad], const float (*bs)[kTile + kPad], int ty, int tx,
                              float (&acc)[8][8]) {
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    float a[8], b[8];
    loadFragment<kTile>(as[k], ty, a);
    loadFragment<kTile>(bs[k], tx, b);
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// Writes (or adds) a thread's 8x8 outputs, a float4 per group of 4 columns where C allows.
template <int kTile>
__device__ void storeOutputs(const MatmulArgs& a, bool vecC, int64_t row0, int64_t col0, int ty, int tx,
                             const float (&acc)[8][8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t r = row0 + outputOffset<kTile>(ty, i);
    if (r >= a.M) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t c = col0 + outputOffset<kTile>(tx, h * 4);
      float* p = a.c + r * a.ldc + c;
      if (vecC && c + 3 < a.N) {
        float4 out = make_float4(acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2], acc[i][h * 4 + 3]);
        if (a.accumulate) {
          const float4 old = *reinterpret_cast<const float4*>(p);
          out = make_float4(old.x + out.x, old.y + out.y, old.z + out.z, old.w + out.w);
        }
        *reinterpret_cast<float4*>(p) = out;
      } else {
        // Unrolled, so that acc is indexed by constants and stays in registers.
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (c + e < a.N) p[e] = a.accumulate ? p[e] + acc[i][h * 4 + e] : acc[i][h * 4 + e];
      }
    }
  }
}

template <int kTile, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kTile * kTile / 64, kTile == 128 ? 2 : 1)
    matmulKernel(const MatmulArgs a, const Operand opA, const Operand opB, bool vecC, int64_t tilesN) {
  constexpr int kSide = kTile / 8;  // threads along each side of the tile
  __shared__ __align__(16) float as[2][kK][kTile + kPad];
  __shared__ __align__(16) float bs[2][kK][kTile + kPad];
  const int64_t tile = blockIdx.x;
  const int64_t row0 = tile / tilesN * kTile, col0 = tile % tilesN * kTile;
  const int ty = static_cast<int>(threadIdx.x) / kSide, tx = static_cast<int>(threadIdx.x) % kSide;
  SliceLoader<kTile, !kTransA> loadA;
  SliceLoader<kTile, kTransB> loadB;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  const int64_t slices = ceilDiv(a.K, kK);
  if (slices > 0) {
    loadA.load(opA, row0, 0, a.K);
    loadB.load(opB, col0, 0, a.K);
    loadA.store(as[0]);
    loadB.store(bs[0]);
  }
  __syncthreads();
  // One barrier per slice: the buffer stored at slice s was last read at slice s-1, which
  // every thread finished before the barrier that ended it.
  for (int64_t s = 0; s < slices; ++s) {
    const int cur = static_cast<int>(s & 1);
    const bool more = s + 1 < slices;
    if (more) {
      loadA.load(opA, row0, (s + 1) * kK, a.K);
      loadB.load(opB, col0, (s + 1) * kK, a.K);
    }
    multiplySlice<kTile>(as[cur], bs[cur], ty, tx, acc);
    if (more) {
      loadA.store(as[cur ^ 1]);
      loadB.store(bs[cur ^ 1]);
    }
    __syncthreads();
  }
  storeOutputs<kTile>(a, vecC, row0, col0, ty, tx, acc);
}

bool vectorizable(const void* p, int64_t ld) { return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 4 == 0; }

template <int kTile>
void launchMatmul(const MatmulArgs& a, cudaStream_t stream) {
  const int64_t tilesN = ceilDiv(a.N, kTile), tiles = ceilDiv(a.M, kTile) * tilesN;
  // A block per tile of C, no grid stride: 2^31 tiles take a C of at least 1.3e11 elements
  // (M = 1, N = 64 * 2^31: 512 GiB), past any one GPU's memory.
  detail::requireAtMost("matmul", kTile == 128 ? "ceil(M / 128) * ceil(N / 128)" : "ceil(M / 64) * ceil(N / 64)", tiles,
                        detail::kMaxGridX);
  const Operand opA{a.a, a.lda, a.M, vectorizable(a.a, a.lda)};
  const Operand opB{a.b, a.ldb, a.N, vectorizable(a.b, a.ldb)};
  const bool vecC = vectorizable(a.c, a.ldc);
  const unsigned blocks = static_cast<unsigned>(tiles);
  constexpr int threads = kTile * kTile / 64;
  if (!a.transA && !a.transB) matmulKernel<kTile, false, false><<<blocks, threads, 0, stream>>>(a, opA, opB, vecC, tilesN);
  else if (!a.transA && a.transB) matmulKernel<kTile, false, true><<<blocks, threads, 0, stream>>>(a, opA, opB, vecC, tilesN);
  else if (a.transA && !a.transB) matmulKernel<kTile, true, false><<<blocks, threads, 0, stream>>>(a, opA, opB, vecC, tilesN);
  else matmulKernel<kTile, true, true><<<blocks, threads, 0, stream>>>(a, opA, opB, vecC, tilesN);
  detail::checkLaunch("matmul");
}

int multiprocessors(int device) {
  int n = 0;
  detail::check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute (SM count)");
  return n;
}

// ================================================================================================
// column sums in a fixed order
// ================================================================================================

constexpr int kRowsPerWarp = 16;
constexpr int64_t kRowChunk = int64_t{kWarps} * kRowsPerWarp;

struct SumPair {
  double first, second;
};
__device__ SumPair operator+(const SumPair& a, const SumPair& b) { return {a.first + b.first, a.second + b.second}; }

// Block (chunk of kRowChunk rows, group of 32 columns) -> partials[chunk * cols + j]. `term(r, j)`
// gives element (r, j)'s contribution (and may write the element's outputs on the way).
template <class P, class Term>
__global__ void __launch_bounds__(kThreads)
    columnChunksKernel(const Term term, int64_t rows, int64_t cols, int64_t columnGroups, P* partials) {
  __shared__ P warpSums[kWarps][32];
  const int64_t chunk = blockIdx.x / columnGroups;
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int64_t j = blockIdx.x % columnGroups * 32 + lane;
  const int64_t r0 = chunk * kRowChunk + warp * kRowsPerWarp, r1 = smaller(rows, r0 + kRowsPerWarp);
  P acc{};
  if (j < cols)
    for (int64_t r = r0; r < r1; ++r) acc = acc + term(r, j);
  warpSums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || j >= cols) return;
  P total = warpSums[0][lane];
  for (int w = 1; w < kWarps; ++w) total = total + warpSums[w][lane];
  partials[chunk * cols + j] = total;
}

// Adds each column's chunk partials in chunk order and hands the total to `finish(j, total)`.
template <class P, class Finish>
__global__ void __launch_bounds__(kThreads)
    columnTotalsKernel(const P* partials, int64_t chunks, int64_t cols, const Finish finish) {
  const int64_t j = globalThread();
  if (j >= cols) return;
  P total{};
  for (int64_t c = 0; c < chunks; ++c) total = total + partials[c * cols + j];
  finish(j, total);
}

// Runs term over rows x cols (rows, cols >= 1) and finish over the column totals.
template <class P, class Term, class Finish>
void columnSums(const Term& term, const Finish& finish, int64_t rows, int64_t cols, int device, cudaStream_t stream,
                const char* name) {
  const int64_t chunks = ceilDiv(rows, kRowChunk), groups = ceilDiv(cols, 32);
  // A block per (chunk, column group), no grid stride (the sums' order depends on the chunks):
  // 2^31 of them take at least 6.8e10 elements (rows = 1: 256 GiB), past any one GPU's memory.
  detail::requireAtMost(name, "ceil(rows / 128) * ceil(cols / 32)", chunks * groups, detail::kMaxGridX);
  detail::ScratchLease lease(device, static_cast<size_t>(chunks * cols) * sizeof(P));
  P* partials = static_cast<P*>(lease.data());
  columnChunksKernel<P, Term><<<static_cast<unsigned>(chunks * groups), kThreads, 0, stream>>>(term, rows, cols, groups, partials);
  detail::checkLaunch(name);
  columnTotalsKernel<P, Finish><<<static_cast<unsigned>(ceilDiv(cols, kThreads)), kThreads, 0, stream>>>(partials, chunks, cols, finish);
  detail::checkLaunch(name);
}

// ================================================================================================
// bias and activation
// ================================================================================================

__global__ void __launch_bounds__(kThreads) biasActKernel(const BiasActArgs a) {
  const int64_t n = a.rows * a.cols;
  for (int64_t i = globalThread(); i < n; i += gridThreads()) {
    const float z = a.bias != nullptr ? a.x[i] + a.bias[i % a.cols] : a.x[i];
    if (a.z != nullptr) a.z[i] = z;
    a.y[i] = activate(a.act, z);
  }
}

// gradX[i] = gradY[i] act'; returns it.
__device__ float biasActGrad(const BiasActBackwardArgs& a, int64_t i) {
  const float g = a.gradY[i] * activationGrad(a.act, a.y != nullptr ? a.y[i] : 0.0f, a.z != nullptr ? a.z[i] : 0.0f);
  a.gradX[i] = g;
  return g;
}

__global__ void __launch_bounds__(kThreads) biasActBackwardKernel(const BiasActBackwardArgs a) {
  const int64_t n = a.rows * a.cols;
  for (int64_t i = globalThread(); i < n; i += gridThreads()) biasActGrad(a, i);
}

struct BiasGradTerm {
  BiasActBackwardArgs a;
  __device__ double operator()(int64_t r, int64_t j) const { return biasActGrad(a, r * a.cols + j); }
};

struct AddToBias {
  float* gradBias;
  __device__ void operator()(int64_t j, double total) const { gradBias[j] = static_cast<float>(gradBias[j] + total); }
};

// ================================================================================================
// embedding
// ================================================================================================

__global__ void __launch_bounds__(kThreads) embeddingKernel(const EmbeddingArgs a) {
  const int64_t n = a.n * a.dim;
  for (int64_t i = globalThread(); i < n; i += gridThreads()) {
    const int64_t row = i / a.dim, d = i - row * a.dim;
    a.out[i] = a.table[static_cast<int64_t>(a.ids[row]) * a.dim + d];
  }
}

constexpr int kIdClasses = 64;   // table rows are owned by warps by id % kIdClasses
constexpr int kIdStage = 1024;   // ids staged in shared memory per pass
static_assert(kIdClasses % kWarps == 0, "a block holds whole classes");

// Block (32 columns, kWarps classes); see the file comment.
__global__ void __launch_bounds__(kThreads) embeddingBackwardKernel(const EmbeddingBackwardArgs a) {
  __shared__ int32_t ids[kIdStage];
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int64_t d = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  const uint32_t cls = blockIdx.y * kWarps + warp;
  const bool active = d < a.dim;
  int64_t held = -1;  // the table row whose running value is in acc
  float acc = 0;
  for (int64_t i0 = 0; i0 < a.n; i0 += kIdStage) {
    const int count = static_cast<int>(smaller(kIdStage, a.n - i0));
    __syncthreads();  // every warp is done with the previous stage
    for (int k = static_cast<int>(threadIdx.x); k < count; k += kThreads) ids[k] = a.ids[i0 + k];
    __syncthreads();
    for (int k = 0; k < count; ++k) {
      const int64_t id = ids[k];
      if (static_cast<uint32_t>(id) % kIdClasses != cls) continue;  // the same for the whole warp
      if (!active) continue;
      if (id != held) {
        if (held >= 0) a.gradTable[held * a.dim + d] = acc;
        held = id;
        acc = a.gradTable[id * a.dim + d];
      }
      acc += a.gradOut[(i0 + k) * a.dim + d];
    }
  }
  if (held >= 0) a.gradTable[held * a.dim + d] = acc;
}

// ================================================================================================
// layer norm
// ================================================================================================

__global__ void __launch_bounds__(kThreads) layerNormKernel(const LayerNormArgs a, int64_t firstBlock) {
  const int64_t r = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (r >= a.rows) return;  // whole warps leave together
  const float* x = a.x + r * a.cols;
  double sum = 0;
  for (int64_t j = lane; j < a.cols; j += 32) sum += x[j];
  sum = warpAllSum(sum);
  const double mean = a.cols > 0 ? sum / a.cols : 0;
  double sq = 0;
  for (int64_t j = lane; j < a.cols; j += 32) sq += (x[j] - mean) * (x[j] - mean);
  sq = warpAllSum(sq);
  const double rstd = 1 / sqrt((a.cols > 0 ? sq / a.cols : 0) + a.eps);
  if (lane == 0) {
    a.mean[r] = static_cast<float>(mean);
    a.rstd[r] = static_cast<float>(rstd);
  }
  float* y = a.y + r * a.cols;
  for (int64_t j = lane; j < a.cols; j += 32) {
    const double xhat = (x[j] - mean) * rstd;
    y[j] = static_cast<float>(xhat * (a.gamma ? a.gamma[j] : 1.0) + (a.beta ? a.beta[j] : 0.0));
  }
}

// gradX of a row (a warp per row): rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)).
__global__ void __launch_bounds__(kThreads) layerNormGradXKernel(const LayerNormBackwardArgs a, int64_t firstBlock) {
  const int64_t r = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (r >= a.rows) return;
  const float* x = a.x + r * a.cols;
  const float* gy = a.gradY + r * a.cols;
  const double mean = a.mean[r], rstd = a.rstd[r];
  double sumG = 0, sumGx = 0;
  for (int64_t j = lane; j < a.cols; j += 32) {
    const double g = static_cast<double>(gy[j]) * (a.gamma ? a.gamma[j] : 1.0);
    sumG += g;
    sumGx += g * (x[j] - mean) * rstd;
  }
  const double meanG = warpAllSum(sumG) / a.cols, meanGx = warpAllSum(sumGx) / a.cols;
  float* gx = a.gradX + r * a.cols;
  for (int64_t j = lane; j < a.cols; j += 32) {
    const double xhat = (x[j] - mean) * rstd;
    const double g = static_cast<double>(gy[j]) * (a.gamma ? a.gamma[j] : 1.0);
    gx[j] = static_cast<float>(rstd * (g - meanG - xhat * meanGx));
  }
}

// (gradGamma, gradBeta) contributions of element (r, j).
struct LayerNormParamTerm {
  LayerNormBackwardArgs a;
  __device__ SumPair operator()(int64_t r, int64_t j) const {
    const int64_t i = r * a.cols + j;
    const double gy = a.gradY[i];
    return {gy * (a.x[i] - static_cast<double>(a.mean[r])) * a.rstd[r], gy};
  }
};

struct AddToGammaBeta {
  float* gradGamma;
  float* gradBeta;
  __device__ void operator()(int64_t j, const SumPair& total) const {
    if (gradGamma != nullptr) gradGamma[j] = static_cast<float>(gradGamma[j] + total.first);
    if (gradBeta != nullptr) gradBeta[j] = static_cast<float>(gradBeta[j] + total.second);
  }
};

// ================================================================================================
// mean pooling
// ================================================================================================

__device__ bool validToken(const uint8_t* mask, int64_t bt) { return mask == nullptr || mask[bt] != 0; }

__global__ void __launch_bounds__(kThreads) meanPoolKernel(const MeanPoolArgs a) {
  const int64_t n = a.B * a.D;
  for (int64_t i = globalThread(); i < n; i += gridThreads()) {
    const int64_t b = i / a.D, d = i - b * a.D;
    double s = 0;
    int64_t count = 0;
    for (int64_t t = 0; t < a.T; ++t) {
      if (!validToken(a.mask, b * a.T + t)) continue;
      s += a.x[(b * a.T + t) * a.D + d];
      count += 1;
    }
    a.out[i] = static_cast<float>(s / static_cast<double>(count > 1 ? count : 1));
  }
}

// inv[b] = 1 / max(1, count_b) rounded to float32, a warp per row (an integer count).
__global__ void __launch_bounds__(kThreads) poolWeightsKernel(const MeanPoolBackwardArgs a, float* inv, int64_t firstBlock) {
  const int64_t b = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (b >= a.B) return;
  double count = 0;  // exact: a sum of at most 2^53 ones in any order
  for (int64_t t = lane; t < a.T; t += 32) count += validToken(a.mask, b * a.T + t) ? 1 : 0;
  count = warpAllSum(count);
  if (lane == 0) inv[b] = static_cast<float>(1.0 / (count > 1 ? count : 1.0));
}

__global__ void __launch_bounds__(kThreads) meanPoolBackwardKernel(const MeanPoolBackwardArgs a, const float* inv) {
  const int64_t n = a.B * a.T * a.D;
  for (int64_t i = globalThread(); i < n; i += gridThreads()) {
    const int64_t bt = i / a.D, d = i - bt * a.D, b = bt / a.T;
    a.gradX[i] = validToken(a.mask, bt) ? a.gradOut[b * a.D + d] * inv[b] : 0.0f;
  }
}

// ================================================================================================
// the optimizer over a list of tensors
// ================================================================================================

constexpr int kChunkItems = static_cast<int>(kNormBlock) / kThreads;  // elements per thread per chunk

// One non-empty tensor of the list on the device; its chunks are firstChunk, firstChunk + 1, ...
struct TensorSlot {
  float* param;
  float* grad;
  float* m;
  float* v;
  int64_t size, firstChunk;
};

// The chunk a block works on: [begin, end) of one tensor, its slot copied into registers.
struct Chunk {
  TensorSlot slot;
  int64_t begin, end;
};

__device__ Chunk chunkOf(const TensorSlot* slots, int64_t count, int64_t block) {
  int64_t lo = 0, hi = count - 1;  // the last slot whose firstChunk <= block
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (slots[mid].firstChunk <= block) lo = mid;
    else hi = mid - 1;
  }
  const TensorSlot s = slots[lo];
  const int64_t begin = (block - s.firstChunk) * kNormBlock;
  return {s, begin, smaller(s.size, begin + kNormBlock)};
}

__global__ void __launch_bounds__(kThreads) adamwKernel(const TensorSlot* slots, int64_t count, const AdamwStep step) {
  const Chunk c = chunkOf(slots, count, blockIdx.x);
#pragma unroll 4
  for (int k = 0; k < kChunkItems; ++k) {
    const int64_t i = c.begin + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i >= c.end) break;
    float p = c.slot.param[i], m = c.slot.m[i], v = c.slot.v[i];
    adamwUpdate(step, c.slot.grad[i], p, m, v);
    c.slot.param[i] = p;
    c.slot.m[i] = m;
    c.slot.v[i] = v;
  }
}

__global__ void __launch_bounds__(kThreads) scaleKernel(const TensorSlot* slots, int64_t count, float factor) {
  const Chunk c = chunkOf(slots, count, blockIdx.x);
  for (int k = 0; k < kChunkItems; ++k) {
    const int64_t i = c.begin + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i >= c.end) break;
    c.slot.grad[i] *= factor;
  }
}

// The chunk's sum of squares in float64: kChunkItems per thread in order, then a fixed tree.
__global__ void __launch_bounds__(kThreads) sumSquaresKernel(const TensorSlot* slots, int64_t count, double* partials) {
  __shared__ double tree[kThreads];
  const Chunk c = chunkOf(slots, count, blockIdx.x);
  double s = 0;
  for (int k = 0; k < kChunkItems; ++k) {
    const int64_t i = c.begin + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i >= c.end) break;
    const double g = c.slot.grad[i];
    s += g * g;
  }
  tree[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) tree[threadIdx.x] += tree[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = tree[0];
}

// The list's non-empty tensors as slots, checked on the host. `full`: params, m and v too.
std::vector<TensorSlot> slotsOf(const TensorList& list, bool full, const char* op) {
  requireSize(op, "tensor count", list.count);
  std::vector<TensorSlot> slots;
  if (list.count == 0) return slots;
  requirePointer(list.sizes, op, "sizes");
  requirePointer(list.grads, op, "grads");
  if (full) {
    requirePointer(list.params, op, "params");
    requirePointer(list.m, op, "m");
    requirePointer(list.v, op, "v");
  }
  int64_t chunks = 0;
  for (int64_t t = 0; t < list.count; ++t) {
    const int64_t n = list.sizes[t];
    requireSize(op, "tensor size", n);
    if (n == 0) continue;
    requirePointer(list.grads[t], op, "grads[i]");
    TensorSlot s{nullptr, list.grads[t], nullptr, nullptr, n, chunks};
    if (full) {
      s.param = list.params[t];
      s.m = list.m[t];
      s.v = list.v[t];
      requirePointer(s.param, op, "params[i]");
      requirePointer(s.m, op, "m[i]");
      requirePointer(s.v, op, "v[i]");
    }
    slots.push_back(s);
    chunks += ceilDiv(n, kNormBlock);
  }
  // A block per chunk of kNormBlock elements (the sums' block structure), no grid stride:
  // 2^31 chunks take 2^31 tensors (far more than a JS array holds) or 1.7e13 elements.
  detail::requireAtMost(op, "the tensors' chunks of 8192 elements", chunks, detail::kMaxGridX);
  return slots;
}

int64_t chunkCount(const std::vector<TensorSlot>& slots) {
  return slots.empty() ? 0 : slots.back().firstChunk + ceilDiv(slots.back().size, kNormBlock);
}

// Copies the slots into scratch (from pageable memory: the call returns once it has read them).
const TensorSlot* uploadSlots(const std::vector<TensorSlot>& slots, TensorSlot* where, cudaStream_t stream,
                              const char* what) {
  detail::check(cudaMemcpyAsync(where, slots.data(), slots.size() * sizeof(TensorSlot), cudaMemcpyHostToDevice, stream),
                what);
  return where;
}

}  // namespace

// --- launchers ----------------------------------------------------------------------------------

void matmul(const MatmulArgs& a, int device) {
  requireSize("matmul", "M", a.M);
  requireSize("matmul", "N", a.N);
  requireSize("matmul", "K", a.K);
  const cudaStream_t stream = detail::activate(device);
  if (a.M == 0 || a.N == 0) return;
  requirePointer(a.c, "matmul", "c");
  if (a.ldc < a.N) throw KernelError(ErrorKind::Range, "matmul: ldc " + std::to_string(a.ldc) + " < N");
  // The epilogue runs as biasAct over C, which is dense.
  if (a.hasEpilogue() && a.ldc != a.N)
    throw KernelError(ErrorKind::Range, "matmul: a bias, activation or z on CUDA needs ldc == N, but ldc is " +
                                            std::to_string(a.ldc) + " and N " + std::to_string(a.N));
  if (a.K > 0) {
    requirePointer(a.a, "matmul", "a");
    requirePointer(a.b, "matmul", "b");
    if (a.lda < (a.transA ? a.M : a.K)) throw KernelError(ErrorKind::Range, "matmul: lda " + std::to_string(a.lda) + " too small");
    if (a.ldb < (a.transB ? a.K : a.N)) throw KernelError(ErrorKind::Range, "matmul: ldb " + std::to_string(a.ldb) + " too small");
  }
  if (a.K > 0 || !a.accumulate) {  // else the product adds nothing
    // 128-tiles reuse each loaded element twice as often; 64-tiles give small products more blocks.
    if (ceilDiv(a.M, 128) * ceilDiv(a.N, 128) >= multiprocessors(device)) launchMatmul<128>(a, stream);
    else launchMatmul<64>(a, stream);
  }
  if (a.hasEpilogue()) biasAct(BiasActArgs{a.M, a.N, a.c, a.bias, a.act, a.c, a.z}, device);
}

void biasAct(const BiasActArgs& a, int device) {
  requireSize("biasAct", "rows", a.rows);
  requireSize("biasAct", "cols", a.cols);
  requireActivation(a.act, "biasAct");
  const cudaStream_t stream = detail::activate(device);
  if (a.rows == 0 || a.cols == 0) return;
  requirePointer(a.x, "biasAct", "x");
  requirePointer(a.y, "biasAct", "y");
  biasActKernel<<<strideBlocks(a.rows * a.cols), kThreads, 0, stream>>>(a);
  detail::checkLaunch("biasAct");
}

void biasActBackward(const BiasActBackwardArgs& a, int device) {
  requireSize("biasActBackward", "rows", a.rows);
  requireSize("biasActBackward", "cols", a.cols);
  requireActivation(a.act, "biasActBackward");
  const cudaStream_t stream = detail::activate(device);
  if (a.rows == 0 || a.cols == 0) return;
  requirePointer(a.gradY, "biasActBackward", "gradY");
  requirePointer(a.gradX, "biasActBackward", "gradX");
  if (a.act == Activation::Tanh || a.act == Activation::Relu) requirePointer(a.y, "biasActBackward", "y");
  if (a.act == Activation::Gelu || a.act == Activation::GeluTanh) requirePointer(a.z, "biasActBackward", "z");
  if (a.gradBias == nullptr) {
    biasActBackwardKernel<<<strideBlocks(a.rows * a.cols), kThreads, 0, stream>>>(a);
    detail::checkLaunch("biasActBackward");
    return;
  }
  columnSums<double>(BiasGradTerm{a}, AddToBias{a.gradBias}, a.rows, a.cols, device, stream, "biasActBackward");
}

// The three steps on the device's stream, one after the other (see DenseBackwardArgs).
void denseBackward(const DenseBackwardArgs& a, int device) {
  biasActBackward(activationGradStep(a), device);
  matmul(weightGradStep(a), device);
  if (a.gradX != nullptr) matmul(inputGradStep(a), device);
}

void embedding(const EmbeddingArgs& a, int device) {
  requireSize("embedding", "n", a.n);
  requireSize("embedding", "dim", a.dim);
  const cudaStream_t stream = detail::activate(device);
  if (a.n == 0 || a.dim == 0) return;
  requirePointer(a.ids, "embedding", "ids");
  requirePointer(a.table, "embedding", "table");
  requirePointer(a.out, "embedding", "out");
  embeddingKernel<<<strideBlocks(a.n * a.dim), kThreads, 0, stream>>>(a);
  detail::checkLaunch("embedding");
}

void embeddingBackward(const EmbeddingBackwardArgs& a, int device) {
  requireSize("embeddingBackward", "n", a.n);
  requireSize("embeddingBackward", "dim", a.dim);
  const cudaStream_t stream = detail::activate(device);
  if (a.n == 0 || a.dim == 0) return;
  requirePointer(a.ids, "embeddingBackward", "ids");
  requirePointer(a.gradOut, "embeddingBackward", "gradOut");
  requirePointer(a.gradTable, "embeddingBackward", "gradTable");
  const int64_t groups = ceilDiv(a.dim, 32);
  detail::requireAtMost("embeddingBackward", "ceil(dim / 32)", groups, detail::kMaxGridX);
  static_assert(kIdClasses / kWarps <= 65535, "classes are gridDim.y");
  const dim3 grid(static_cast<unsigned>(groups), kIdClasses / kWarps);
  embeddingBackwardKernel<<<grid, kThreads, 0, stream>>>(a);
  detail::checkLaunch("embeddingBackward");
}

void layerNorm(const LayerNormArgs& a, int device) {
  requireSize("layerNorm", "rows", a.rows);
  requireSize("layerNorm", "cols", a.cols);
  const cudaStream_t stream = detail::activate(device);
  if (a.rows == 0) return;
  requirePointer(a.mean, "layerNorm", "mean");
  requirePointer(a.rstd, "layerNorm", "rstd");
  if (a.cols > 0) {
    requirePointer(a.x, "layerNorm", "x");
    requirePointer(a.y, "layerNorm", "y");
  }
  detail::launchWarpRows<kWarps>(a.rows, [&](int64_t first, unsigned blocks) {
    layerNormKernel<<<blocks, kThreads, 0, stream>>>(a, first);
    detail::checkLaunch("layerNorm");
  });
}

void layerNormBackward(const LayerNormBackwardArgs& a, int device) {
  requireSize("layerNormBackward", "rows", a.rows);
  requireSize("layerNormBackward", "cols", a.cols);
  const cudaStream_t stream = detail::activate(device);
  if (a.rows == 0 || a.cols == 0) return;
  requirePointer(a.x, "layerNormBackward", "x");
  requirePointer(a.mean, "layerNormBackward", "mean");
  requirePointer(a.rstd, "layerNormBackward", "rstd");
  requirePointer(a.gradY, "layerNormBackward", "gradY");
  requirePointer(a.gradX, "layerNormBackward", "gradX");
  // The parameter sums read gradY, which gradX may overwrite: they run first.
  if (a.gradGamma != nullptr || a.gradBeta != nullptr)
    columnSums<SumPair>(LayerNormParamTerm{a}, AddToGammaBeta{a.gradGamma, a.gradBeta}, a.rows, a.cols, device, stream,
                        "layerNormBackward");
  detail::launchWarpRows<kWarps>(a.rows, [&](int64_t first, unsigned blocks) {
    layerNormGradXKernel<<<blocks, kThreads, 0, stream>>>(a, first);
    detail::checkLaunch("layerNormBackward");
  });
}

void meanPool(const MeanPoolArgs& a, int device) {
  requireSize("meanPool", "B", a.B);
  requireSize("meanPool", "T", a.T);
  requireSize("meanPool", "D", a.D);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0 || a.D == 0) return;
  requirePointer(a.out, "meanPool", "out");
  if (a.T > 0) requirePointer(a.x, "meanPool", "x");
  meanPoolKernel<<<strideBlocks(a.B * a.D), kThreads, 0, stream>>>(a);
  detail::checkLaunch("meanPool");
}

void meanPoolBackward(const MeanPoolBackwardArgs& a, int device) {
  requireSize("meanPoolBackward", "B", a.B);
  requireSize("meanPoolBackward", "T", a.T);
  requireSize("meanPoolBackward", "D", a.D);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0 || a.T == 0 || a.D == 0) return;
  requirePointer(a.gradOut, "meanPoolBackward", "gradOut");
  requirePointer(a.gradX, "meanPoolBackward", "gradX");
  detail::ScratchLease lease(device, static_cast<size_t>(a.B) * sizeof(float));
  float* inv = static_cast<float*>(lease.data());
  detail::launchWarpRows<kWarps>(a.B, [&](int64_t first, unsigned blocks) {
    poolWeightsKernel<<<blocks, kThreads, 0, stream>>>(a, inv, first);
    detail::checkLaunch("meanPoolBackward");
  });
  meanPoolBackwardKernel<<<strideBlocks(a.B * a.T * a.D), kThreads, 0, stream>>>(a, inv);
  detail::checkLaunch("meanPoolBackward");
}

void adamw(const AdamwArgs& a, int device) {
  if (a.step < 1) throw KernelError(ErrorKind::Range, "adamw: step " + std::to_string(a.step) + " < 1");
  const std::vector<TensorSlot> slots = slotsOf(a.tensors, true, "adamw");
  const cudaStream_t stream = detail::activate(device);
  if (slots.empty()) return;
  detail::ScratchLease lease(device, slots.size() * sizeof(TensorSlot));
  const TensorSlot* s = uploadSlots(slots, static_cast<TensorSlot*>(lease.data()), stream, "adamw (tensor table)");
  adamwKernel<<<static_cast<unsigned>(chunkCount(slots)), kThreads, 0, stream>>>(s, static_cast<int64_t>(slots.size()),
                                                                                  adamwStep(a));
  detail::checkLaunch("adamw");
}

double sumSquares(const SumSquaresArgs& a, int device) {
  const std::vector<TensorSlot> slots = slotsOf(a.tensors, false, "sumSquares");
  const cudaStream_t stream = detail::activate(device);
  if (slots.empty()) return 0;
  const int64_t chunks = chunkCount(slots);
  Carver sizing(nullptr);
  sizing.take<TensorSlot>(static_cast<int64_t>(slots.size()));
  sizing.take<double>(chunks);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  TensorSlot* table = carver.take<TensorSlot>(static_cast<int64_t>(slots.size()));
  double* partials = carver.take<double>(chunks);
  const TensorSlot* s = uploadSlots(slots, table, stream, "sumSquares (tensor table)");
  sumSquaresKernel<<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(s, static_cast<int64_t>(slots.size()), partials);
  detail::checkLaunch("sumSquares");
  std::vector<double> host(static_cast<size_t>(chunks));
  detail::toHost(host.data(), partials, host.size() * sizeof(double), stream, "sumSquares (partials to host)");
  double total = 0;
  for (double p : host) total += p;  // the reference's order: tensors, then blocks
  return total;
}

void scale(const ScaleArgs& a, int device) {
  const std::vector<TensorSlot> slots = slotsOf(a.tensors, false, "scale");
  const cudaStream_t stream = detail::activate(device);
  if (slots.empty()) return;
  detail::ScratchLease lease(device, slots.size() * sizeof(TensorSlot));
  const TensorSlot* s = uploadSlots(slots, static_cast<TensorSlot*>(lease.data()), stream, "scale (tensor table)");
  scaleKernel<<<static_cast<unsigned>(chunkCount(slots)), kThreads, 0, stream>>>(s, static_cast<int64_t>(slots.size()),
                                                                                 a.factor);
  detail::checkLaunch("scale");
}

}  // namespace cuda
}  // namespace rlhf
