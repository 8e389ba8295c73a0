// The optimised CPU entry points of the neural-network family except the matrix multiply
// (gemm.cpp): rows spread over the thread pool, elementwise work in the chunk kernels of
// nn_chunks.h. Column sums (the bias, gamma and beta gradients) run over rows in order, so every
// result is bit-identical across thread counts; all but the vector tanh and the sum of squares
// are bit-identical to the reference too.
#include <algorithm>
#include <functional>
#include <vector>

#include "../reference/nn_math.h"
#include "cpu_variants.h"
#include "rlhf/nn.h"
#include "thread_pool.h"

namespace rlhf {

using namespace nn_math;

// Rows of `cols` elements per thread part: enough that a part is worth waking a thread.
static int64_t rowGrain(int64_t cols) { return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(cols, 1)); }

// Columns per thread part of a column sum over `rows` rows.
static int64_t columnGrain(int64_t rows) { return std::max<int64_t>(kLine, kMinElementsPerThread / std::max<int64_t>(rows, 1)); }

void biasActCpu(const BiasActArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return biasActReference(a);
  parallelFor(a.rows, rowGrain(a.cols), 1, [&](int64_t r0, int64_t r1) { k->biasActRows(a, r0, r1); });
}

void biasActBackwardCpu(const BiasActBackwardArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return biasActBackwardReference(a);
  parallelFor(a.rows, rowGrain(a.cols), 1, [&](int64_t r0, int64_t r1) { k->biasActGradRows(a, r0, r1); });
  if (a.gradBias == nullptr) return;
  std::vector<double> sums(static_cast<size_t>(a.cols));
  parallelFor(a.cols, columnGrain(a.rows), kLine, [&](int64_t c0, int64_t c1) {
    k->columnSums(a.gradX, a.rows, a.cols, c0, c1, sums.data());
    for (int64_t j = c0; j < c1; ++j) a.gradBias[j] = static_cast<float>(a.gradBias[j] + sums[j]);
  });
}

// Products of at most this many flops each run side by side, as row slices in one region,
// rather than one after the other over the whole pool: a product this small spends much of a
// split on the split itself (on two cores a 1-Mflop product ran 1.2 to 1.4 times faster, not 2).
constexpr int64_t kSideBySideFlops = int64_t{1} << 22;

static bool overlaps(const float* p, int64_t n, const float* q, int64_t m) {
  return std::less<const float*>()(p, q + m) && std::less<const float*>()(q, p + n);
}

// Whether the two products may run at once: each must leave alone what the other reads.
static bool productsIndependent(const DenseBackwardArgs& a) {
  const int64_t xs = a.rows * a.in, ws = a.out * a.in, zs = a.rows * a.out;
  return !overlaps(a.gradX, xs, a.x, xs) && !overlaps(a.gradX, xs, a.w, ws) && !overlaps(a.gradX, xs, a.gradZ, zs) &&
         !overlaps(a.gradX, xs, a.gradW, ws) && !overlaps(a.gradW, ws, a.w, ws) && !overlaps(a.gradW, ws, a.gradZ, zs);
}

// Rows [r0, r1) of a product: the same elements with the same bits (they depend on K only).
static MatmulArgs rowSlice(const MatmulArgs& m, int64_t r0, int64_t r1) {
  MatmulArgs s = m;
  s.M = r1 - r0;
  s.a = m.a + (m.transA ? r0 : r0 * m.lda);
  s.c = m.c + r0 * m.ldc;
  return s;
}

void denseBackwardCpu(const DenseBackwardArgs& a) {
  biasActBackwardCpu(activationGradStep(a));
  const MatmulArgs weight = weightGradStep(a);
  if (a.gradX == nullptr) return matmulCpu(weight);
  const MatmulArgs input = inputGradStep(a);
  const int64_t threads = ThreadPool::instance().numThreads(), flops = 2 * a.rows * a.in * a.out;
  const bool sideBySide = threads > 1 && 2 * flops >= kMinParallelFlops && flops <= kSideBySideFlops &&
                          productsIndependent(a);
  if (!sideBySide) {
    matmulCpu(weight);
    return matmulCpu(input);
  }
  // A slice per thread of each product, taken from one counter: a thread slowed by other work on
  // the machine takes fewer. A region opened inside a task runs inline, on that task's thread.
  ThreadPool::instance().run(2 * threads, [&](int64_t t) {
    const MatmulArgs& m = t < threads ? weight : input;
    const int64_t p = t % threads;
    matmulCpu(rowSlice(m, p * m.M / threads, (p + 1) * m.M / threads));
  });
}

void embeddingCpu(const EmbeddingArgs& a) {
  if (kernelsForCall() == nullptr) return embeddingReference(a);
  parallelFor(a.n, rowGrain(a.dim), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::copy_n(a.table + static_cast<int64_t>(a.ids[i]) * a.dim, a.dim, a.out + i * a.dim);
  });
}

// Each part owns a range of table rows and walks every id in order, so that each row receives
// its gradients in the order i = 0..n-1, as in the reference, with no two threads on one row.
void embeddingBackwardCpu(const EmbeddingBackwardArgs& a) {
  if (kernelsForCall() == nullptr) return embeddingBackwardReference(a);
  const int64_t grain = std::max<int64_t>(1, a.vocab * kMinElementsPerThread / std::max<int64_t>(a.n * a.dim, 1));
  parallelFor(a.vocab, grain, 1, [&](int64_t v0, int64_t v1) {
    for (int64_t i = 0; i < a.n; ++i) {
      const int64_t id = a.ids[i];
      if (id < v0 || id >= v1) continue;
      float* row = a.gradTable + id * a.dim;
      const float* g = a.gradOut + i * a.dim;
      for (int64_t d = 0; d < a.dim; ++d) row[d] += g[d];
    }
  });
}

void layerNormCpu(const LayerNormArgs& a) {
  if (kernelsForCall() == nullptr) return layerNormReference(a);
  parallelFor(a.rows, rowGrain(a.cols), 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) layerNormRow(a, r);
  });
}

void layerNormBackwardCpu(const LayerNormBackwardArgs& a) {
  if (kernelsForCall() == nullptr) return layerNormBackwardReference(a);
  parallelFor(a.rows, rowGrain(a.cols), 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) layerNormBackwardRow(a, r);
  });
  if (a.gradGamma == nullptr && a.gradBeta == nullptr) return;
  parallelFor(a.cols, columnGrain(a.rows), kLine, [&](int64_t c0, int64_t c1) { layerNormParamGrads(a, c0, c1); });
}

void meanPoolCpu(const MeanPoolArgs& a) {
  if (kernelsForCall() == nullptr) return meanPoolReference(a);
  parallelFor(a.B, rowGrain(a.T * a.D), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) meanPoolRow(a, b);
  });
}

void meanPoolBackwardCpu(const MeanPoolBackwardArgs& a) {
  if (kernelsForCall() == nullptr) return meanPoolBackwardReference(a);
  parallelFor(a.B, rowGrain(a.T * a.D), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) meanPoolBackwardRow(a, b);
  });
}

// Calls body(t, b, i0, i1) for every block b of at most kNormBlock elements [i0, i1) of every
// tensor t of the list, the blocks of all tensors spread over the pool together. A list of few
// elements in all (a small model: many tiny tensors) runs on the calling thread.
template <typename Body>
static void overTensorBlocks(const TensorList& l, Body body) {
  std::vector<int64_t> first(static_cast<size_t>(l.count) + 1, 0);  // the first block of each tensor
  int64_t elements = 0;
  for (int64_t t = 0; t < l.count; ++t) {
    first[t + 1] = first[t] + (l.sizes[t] + kNormBlock - 1) / kNormBlock;
    elements += l.sizes[t];
  }
  auto blocks = [&](int64_t b0, int64_t b1) {
    int64_t t = std::upper_bound(first.begin(), first.end(), b0) - first.begin() - 1;
    for (int64_t b = b0; b < b1; ++b) {
      while (b >= first[t + 1]) ++t;
      const int64_t i0 = (b - first[t]) * kNormBlock;
      body(t, b, i0, std::min(l.sizes[t], i0 + kNormBlock));
    }
  };
  if (elements < kMinElementsPerThread) return blocks(0, first[l.count]);
  parallelFor(first[l.count], std::max<int64_t>(1, kMinElementsPerThread / kNormBlock), 1, blocks);
}

void adamwCpu(const AdamwArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return adamwReference(a);
  const AdamwStep s = adamwStep(a);
  const TensorList& l = a.tensors;
  overTensorBlocks(l, [&](int64_t t, int64_t, int64_t i0, int64_t i1) {
    k->adamwRange(s, l.grads[t], l.params[t], l.m[t], l.v[t], i0, i1);
  });
}

// Blocks as the reference forms them, each summed in vector lanes, added in block order.
double sumSquaresCpu(const SumSquaresArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return sumSquaresReference(a);
  const TensorList& l = a.tensors;
  int64_t blocks = 0;
  for (int64_t t = 0; t < l.count; ++t) blocks += (l.sizes[t] + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  overTensorBlocks(l, [&](int64_t t, int64_t b, int64_t i0, int64_t i1) { partial[b] = k->sumSquaresRange(l.grads[t], i0, i1); });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

void scaleCpu(const ScaleArgs& a) {
  if (kernelsForCall() == nullptr) return scaleReference(a);
  const TensorList& l = a.tensors;
  overTensorBlocks(l, [&](int64_t t, int64_t, int64_t i0, int64_t i1) {
    float* g = l.grads[t];
    for (int64_t i = i0; i < i1; ++i) g[i] *= a.factor;
  });
}

}  // namespace rlhf
