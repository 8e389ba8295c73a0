// CUDA kernels of the preference family (preference.h, SEMANTICS.md §7-9): the pairwise reward-
// model loss, the DPO family, sequence log-probs and their backward, group-relative advantages.
//
//  - Losses: a thread per pair computes the pair's terms in float64 with the formulas of
//    native/reference/preference_math.h (shared with the scalar reference, so a pair's gradient
//    is the same sequence of operations) and writes its gradient. Each block sums its pairs'
//    terms in a fixed order (kItems per thread, then a tree in shared memory); the blocks'
//    partial sums meet in a fixed-shape tree (reducePartials). Repeated runs give the same bits;
//    there are no float atomics. bco_pair's reference point (the batch mean reward) is such a
//    reduction too, made first and left on the device for the loss kernel.
//  - sequenceLogprobs: a warp per row, float64 sums in a fixed shuffle tree; the backward a warp
//    per row too (an integer count of valid tokens, then the row's writes).
//  - groupAdvantages with groupSize: a warp per group; each lane computes the group's count, sum,
//    mean and Bessel-corrected std sequentially in row order, as the scalar reference does
//    (groups are small), then the lanes write the group's rows. The batch std of scale Batch is
//    a deterministic tree of moments. With groupIds the groups are arbitrary sets of rows: ids
//    and rewards are copied to the host, the CPU kernel computes the advantages and they are
//    copied back (B is small in practice, a few thousand rows at most).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../reference/preference_math.h"
#include "device.h"
#include "rlhf/cuda.h"
#include "rlhf/error.h"
#include "rlhf/preference.h"

namespace rlhf {
namespace cuda {

namespace {

using detail::Carver;
using detail::toHost;

using detail::Moments;
using namespace preference_math;

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// A block of a reduction covers kBlockItems elements (pairs or partial results): kItems per
// thread, read kThreads apart so that the loads of a warp are contiguous.
constexpr int kItems = 8;
constexpr int64_t kBlockItems = static_cast<int64_t>(kThreads) * kItems;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The reductions take a block per kBlockItems elements (their tree shape depends on it), so the
// grid's 2^31 - 1 blocks bound their length: 4.4e12 pairs, past any one GPU's memory.
constexpr int64_t kMaxReduced = detail::kMaxGridX * kBlockItems;

// --- preconditions: a null pointer or a negative size would fault on the device and poison the
// whole CUDA context, so they are caught on the host --------------------------------------------

void requireSize(const char* op, const char* name, int64_t n) {
  if (n < 0) throw KernelError(ErrorKind::Range, std::string(op) + ": negative " + name + " " + std::to_string(n));
}

void requirePointer(const void* p, const char* op, const char* name) {
  if (p == nullptr)
    throw KernelError(ErrorKind::Internal, std::string(op) + ": `" + name + "` is a null pointer");
}

// --- partial results and their deterministic reduction -----------------------------------------

struct PairwisePartial {
  double loss, center, correct, margin, chosen, rejected;
};
__device__ PairwisePartial combine(const PairwisePartial& a, const PairwisePartial& b) {
  return {a.loss + b.loss,     a.center + b.center, a.correct + b.correct,
          a.margin + b.margin, a.chosen + b.chosen, a.rejected + b.rejected};
}

struct DpoPartial {
  double loss, chosen, rejected, correct;
};
__device__ DpoPartial combine(const DpoPartial& a, const DpoPartial& b) {
  return {a.loss + b.loss, a.chosen + b.chosen, a.rejected + b.rejected, a.correct + b.correct};
}

struct Sum {
  double s;
};
__device__ Sum combine(const Sum& a, const Sum& b) { return {a.s + b.s}; }

// Moments combine with detail::combine (device.h), found by argument-dependent lookup.

// Sums the kThreads values of a block in a fixed tree; the result is in thread 0.
template <class P>
__device__ P blockTree(P acc) {
  __shared__ P tree[kThreads];
  tree[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) tree[threadIdx.x] = combine(tree[threadIdx.x], tree[threadIdx.x + stride]);
    __syncthreads();
  }
  return tree[0];
}

// Each block reduces up to kBlockItems elements into one: `term(i)` gives element i's partial
// result (and may write its outputs on the way).
template <class P, class Term>
__global__ void __launch_bounds__(kThreads) blockSumsKernel(const Term term, int64_t n, P* out) {
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kBlockItems;
  P acc{};
  for (int k = 0; k < kItems; ++k) {
    const int64_t i = start + threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (i < n) acc = combine(acc, term(i));
  }
  acc = blockTree(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

template <class P>
struct PartialAt {
  const P* in;
  __device__ P operator()(int64_t i) const { return in[i]; }
};

// Reduces count >= 1 partials on the device level by level, `spare` holding
// ceilDiv(count, kBlockItems) of them. Returns where the single result lies.
template <class P>
P* reducePartials(P* in, P* spare, int64_t count, cudaStream_t stream, const char* name) {
  P* out = spare;
  while (count > 1) {
    const int64_t next = ceilDiv(count, kBlockItems);
    using Partials = PartialAt<P>;
    blockSumsKernel<P, Partials><<<static_cast<unsigned>(next), kThreads, 0, stream>>>(Partials{in}, count, out);
    detail::checkLaunch(name);
    std::swap(in, out);
    count = next;
  }
  return in;
}

// Runs term over n >= 1 elements and reduces their partial results to one on the device.
template <class P, class Term>
P* reduceTerms(const Term& term, int64_t n, P* partials, P* spare, cudaStream_t stream, const char* name) {
  const int64_t blocks = ceilDiv(n, kBlockItems);
  blockSumsKernel<P, Term><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(term, n, partials);
  detail::checkLaunch(name);
  return reducePartials(partials, spare, blocks, stream, name);
}

template <class P>
struct ReductionScratch {
  P* partials;
  P* spare;
};

template <class P>
ReductionScratch<P> carveReduction(Carver& c, int64_t n) {
  const int64_t blocks = ceilDiv(n, kBlockItems);
  return {c.take<P>(blocks), c.take<P>(ceilDiv(blocks, kBlockItems))};
}

// --- §7 the pairwise reward-model loss ----------------------------------------------------------

struct PairwiseTerm {
  PairwiseLossArgs a;
  __device__ PairwisePartial operator()(int64_t i) const {
    const double n = static_cast<double>(a.N);
    const double rc = a.chosen[i], rr = a.rejected[i];
    const double m = a.margin != nullptr ? a.margin[i] : a.marginValue;
    const double delta = rc - rr - m;
    const double sum = rc + rr;
    const double g = (sigmoid(delta) - 1) / n, c = 2 * static_cast<double>(a.centerCoef) * sum / n;
    a.gradChosen[i] = static_cast<float>(g + c);
    a.gradRejected[i] = static_cast<float>(-g + c);
    return {softplus(-delta), sum * sum, rc > rr ? 1.0 : 0.0, rc - rr, rc, rr};
  }
};

// --- §8 the DPO family ------------------------------------------------------------------------------

// bco_pair's batch sum of (x + y), per pair (x) + (y) as bcoDelta adds them.
struct BcoTerm {
  DpoLossArgs a;
  __device__ Sum operator()(int64_t i) const {
    return {(static_cast<double>(a.policyChosen[i]) - a.refChosen[i]) +
            (static_cast<double>(a.policyRejected[i]) - a.refRejected[i])};
  }
};

struct DpoTerm {
  DpoLossArgs a;
  const Sum* bcoSum;  // null unless bco_pair
  __device__ DpoPartial operator()(int64_t i) const {
    const double n = static_cast<double>(a.N), beta = a.beta;
    // The formula of bcoDelta, operation for operation.
    const double delta = bcoSum != nullptr ? static_cast<double>(a.beta) * bcoSum->s / (2.0 * n) : 0.0;
    const double x = static_cast<double>(a.policyChosen[i]) - a.refChosen[i];
    const double y = static_cast<double>(a.policyRejected[i]) - a.refRejected[i];
    const double nc = a.chosenLengths ? a.chosenLengths[i] : 0, nr = a.rejectedLengths ? a.rejectedLengths[i] : 0;
    const DpoPair p = dpoPair(a.type, x, y, nc, nr, beta, a.labelSmoothing, a.discopopTau, delta);
    a.gradChosen[i] = static_cast<float>(p.dldx / n);
    a.gradRejected[i] = static_cast<float>(p.dldy / n);
    return {p.l, beta * x, beta * y, beta * x > beta * y ? 1.0 : 0.0};
  }
};

// --- §8 sequence log-probs -----------------------------------------------------------------------

__device__ double warpSumDouble(double x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

__device__ long long warpSumCount(long long x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(kFullMask, x, offset);
  return x;
}

__global__ void __launch_bounds__(kThreads) sequenceLogprobsKernel(const SequenceLogprobsArgs a, int64_t firstBlock) {
  const int64_t b = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (b >= a.B) return;  // whole warps leave together
  const float* lp = a.tokenLogprobs + b * a.T;
  const uint8_t* m = a.mask != nullptr ? a.mask + b * a.T : nullptr;
  double sum = 0;
  long long n = 0;
  // Each log-prob is read whatever its mask, so that its load need not wait for the mask's, and
  // selected away where the mask is 0 (a NaN there never enters; adding +0 leaves the sum as
  // it was, which is never -0).
  for (int64_t t = lane; t < a.T; t += 32) {
    const float x = lp[t];
    const bool valid = m == nullptr || m[t] != 0;
    sum += valid ? static_cast<double>(x) : 0.0;
    n += valid ? 1 : 0;
  }
  sum = warpSumDouble(sum);
  n = warpSumCount(n);
  if (lane == 0) {
    const double count = static_cast<double>(n);
    a.out[b] = static_cast<float>(a.average ? (count > 0 ? sum / count : 0.0) : sum);
  }
}

__global__ void __launch_bounds__(kThreads)
    sequenceLogprobsBackwardKernel(const SequenceLogprobsBackwardArgs a, int64_t firstBlock) {
  const int64_t b = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (b >= a.B) return;
  const uint8_t* m = a.mask != nullptr ? a.mask + b * a.T : nullptr;
  double g = a.gradSequence[b];
  if (a.average) {
    long long n = 0;
    if (m == nullptr) {
      n = a.T;
    } else {
      for (int64_t t = lane; t < a.T; t += 32) n += m[t] != 0 ? 1 : 0;
      n = __shfl_sync(kFullMask, warpSumCount(n), 0);
    }
    const double count = static_cast<double>(n);
    g = count > 0 ? g / count : 0.0;
  }
  const float v = static_cast<float>(g);
  float* out = a.out + b * a.T;
  for (int64_t t = lane; t < a.T; t += 32) out[t] = m == nullptr || m[t] != 0 ? v : 0.0f;
}

// --- §9 group-relative advantages ------------------------------------------------------------------

// The batch's non-NaN rewards as moments, for scale Batch.
struct RewardMoments {
  const float* rewards;
  __device__ Moments operator()(int64_t i) const {
    const double x = rewards[i];
    return x != x ? Moments{0, 0, 0} : Moments{1, x, 0};
  }
};

// A warp per group of groupSize consecutive rows. Every lane computes the group's statistics in
// row order, as statsOf in the scalar reference (same operations, same order: the same bits).
__global__ void __launch_bounds__(kThreads)
    groupAdvantagesKernel(const GroupAdvantagesArgs a, const Moments* batch, int64_t firstBlock) {
  const int64_t groups = a.N / a.groupSize;
  const int64_t gi = detail::warpRow<kWarps>(firstBlock);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (gi >= groups) return;
  const float* r = a.rewards + gi * a.groupSize;
  float* out = a.out + gi * a.groupSize;
  const int64_t G = a.groupSize;
  double count = 0, sum = 0;
  for (int64_t k = 0; k < G; ++k) {
    const double x = r[k];
    if (x != x) continue;
    sum += x;
    count += 1;
  }
  double mean = 0, sd = 0;
  if (count > 0) {
    mean = sum / count;
    double m2 = 0;
    for (int64_t k = 0; k < G; ++k) {
      const double x = r[k];
      if (x != x) continue;
      m2 += (x - mean) * (x - mean);
    }
    sd = count > 1 ? sqrt(m2 / (count - 1)) : 0.0;
  }
  double batchStd = 0;
  if (batch != nullptr) batchStd = batch->count > 1 ? sqrt(batch->m2 / (batch->count - 1)) : 0.0;
  const double eps = a.eps;
  for (int64_t k = lane; k < G; k += 32) {
    const double x = r[k];
    double adv = 0;
    if (!(x != x)) {
      switch (a.estimator) {
        case GroupEstimator::Grpo: {
          const double centred = x - mean;
          if (a.scale == GroupScale::Group) adv = centred / (sd + eps);
          else if (a.scale == GroupScale::Batch) adv = centred / (batchStd + eps);
          else adv = centred;
          break;
        }
        case GroupEstimator::Rloo: adv = count > 1 ? (count * x - sum) / (count - 1) : 0.0; break;
        case GroupEstimator::ReinforceBaseline: adv = x - mean; break;
      }
    }
    out[k] = static_cast<float>(adv);
  }
}

}  // namespace

// --- launchers ----------------------------------------------------------------------------------

PairwiseLossStats pairwiseLoss(const PairwiseLossArgs& a, int device) {
  requireSize("pairwiseLoss", "N", a.N);
  detail::requireAtMost("pairwiseLoss", "N", a.N, kMaxReduced);
  const cudaStream_t stream = detail::activate(device);
  PairwiseLossStats s;
  if (a.N == 0) return s;
  requirePointer(a.chosen, "pairwiseLoss", "chosen");
  requirePointer(a.rejected, "pairwiseLoss", "rejected");
  requirePointer(a.gradChosen, "pairwiseLoss", "gradChosen");
  requirePointer(a.gradRejected, "pairwiseLoss", "gradRejected");
  Carver sizing(nullptr);
  carveReduction<PairwisePartial>(sizing, a.N);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  const auto r = carveReduction<PairwisePartial>(carver, a.N);
  const PairwisePartial* result = reduceTerms(PairwiseTerm{a}, a.N, r.partials, r.spare, stream, "pairwiseLoss");
  PairwisePartial sum;
  toHost(&sum, result, sizeof(sum), stream, "pairwiseLoss (sums to host)");
  const double n = static_cast<double>(a.N);
  s.loss = sum.loss / n + static_cast<double>(a.centerCoef) * sum.center / n;
  s.accuracy = sum.correct / n;
  s.meanMargin = sum.margin / n;
  s.meanChosen = sum.chosen / n;
  s.meanRejected = sum.rejected / n;
  return s;
}

DpoLossStats dpoLoss(const DpoLossArgs& a, int device) {
  requireSize("dpoLoss", "N", a.N);
  detail::requireAtMost("dpoLoss", "N", a.N, kMaxReduced);
  const cudaStream_t stream = detail::activate(device);
  DpoLossStats s;
  if (a.N == 0) return s;
  if (static_cast<int32_t>(a.type) < 0 || static_cast<int32_t>(a.type) > static_cast<int32_t>(DpoLossType::Discopop))
    throw KernelError(ErrorKind::Range, "dpoLoss: unknown loss type " + std::to_string(static_cast<int32_t>(a.type)));
  requirePointer(a.policyChosen, "dpoLoss", "policyChosen");
  requirePointer(a.policyRejected, "dpoLoss", "policyRejected");
  requirePointer(a.refChosen, "dpoLoss", "refChosen");
  requirePointer(a.refRejected, "dpoLoss", "refRejected");
  requirePointer(a.gradChosen, "dpoLoss", "gradChosen");
  requirePointer(a.gradRejected, "dpoLoss", "gradRejected");
  if (a.type == DpoLossType::SigmoidNorm) {
    requirePointer(a.chosenLengths, "dpoLoss", "chosenLengths");
    requirePointer(a.rejectedLengths, "dpoLoss", "rejectedLengths");
  }
  if ((a.chosenLengths == nullptr) != (a.rejectedLengths == nullptr))
    throw KernelError(ErrorKind::Internal, "dpoLoss: `chosenLengths` and `rejectedLengths` must be given together");
  const bool bco = a.type == DpoLossType::BcoPair;
  auto carve = [&](Carver& c) {
    struct {
      ReductionScratch<DpoPartial> loss;
      ReductionScratch<Sum> bco;
    } s{carveReduction<DpoPartial>(c, a.N), carveReduction<Sum>(c, bco ? a.N : 0)};
    return s;
  };
  Carver sizing(nullptr);
  carve(sizing);
  detail::ScratchLease lease(device, sizing.bytes());
  Carver carver(lease.data());
  const auto sc = carve(carver);
  const Sum* bcoSum = bco ? reduceTerms(BcoTerm{a}, a.N, sc.bco.partials, sc.bco.spare, stream, "dpoLoss (bco_pair mean)")
                          : nullptr;
  const DpoPartial* result = reduceTerms(DpoTerm{a, bcoSum}, a.N, sc.loss.partials, sc.loss.spare, stream, "dpoLoss");
  DpoPartial sum;
  toHost(&sum, result, sizeof(sum), stream, "dpoLoss (sums to host)");
  const double n = static_cast<double>(a.N);
  s.loss = sum.loss / n;
  s.rewardsChosen = sum.chosen / n;
  s.rewardsRejected = sum.rejected / n;
  s.accuracy = sum.correct / n;
  s.margin = (sum.chosen - sum.rejected) / n;
  return s;
}

void sequenceLogprobs(const SequenceLogprobsArgs& a, int device) {
  requireSize("sequenceLogprobs", "B", a.B);
  requireSize("sequenceLogprobs", "T", a.T);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0) return;
  requirePointer(a.out, "sequenceLogprobs", "out");
  if (a.T > 0) requirePointer(a.tokenLogprobs, "sequenceLogprobs", "tokenLogprobs");
  detail::launchWarpRows<kWarps>(a.B, [&](int64_t first, unsigned blocks) {
    sequenceLogprobsKernel<<<blocks, kThreads, 0, stream>>>(a, first);
    detail::checkLaunch("sequenceLogprobs");
  });
}

void sequenceLogprobsBackward(const SequenceLogprobsBackwardArgs& a, int device) {
  requireSize("sequenceLogprobsBackward", "B", a.B);
  requireSize("sequenceLogprobsBackward", "T", a.T);
  const cudaStream_t stream = detail::activate(device);
  if (a.B == 0 || a.T == 0) return;  // no element to write
  requirePointer(a.gradSequence, "sequenceLogprobsBackward", "gradSequence");
  requirePointer(a.out, "sequenceLogprobsBackward", "out");
  detail::launchWarpRows<kWarps>(a.B, [&](int64_t first, unsigned blocks) {
    sequenceLogprobsBackwardKernel<<<blocks, kThreads, 0, stream>>>(a, first);
    detail::checkLaunch("sequenceLogprobsBackward");
  });
}

void groupAdvantages(const GroupAdvantagesArgs& a, int device) {
  requireSize("groupAdvantages", "N", a.N);
  requireSize("groupAdvantages", "groupSize", a.groupSize);
  if (a.groupSize > 0 && a.estimator == GroupEstimator::Grpo && a.scale == GroupScale::Batch)
    detail::requireAtMost("groupAdvantages", "N", a.N, kMaxReduced);  // the batch std's reduction
  const cudaStream_t stream = detail::activate(device);
  if (a.N == 0) return;
  requirePointer(a.rewards, "groupAdvantages", "rewards");
  requirePointer(a.out, "groupAdvantages", "out");
  if (a.groupSize == 0) {
    // Groups by id: arbitrary sets of rows, in order of first appearance. B is small in
    // practice, so the rewards and ids go to the host, the CPU kernel computes the advantages
    // (the same bits as the scalar reference) and they come back.
    requirePointer(a.groupIds, "groupAdvantages", "groupIds");
    const size_t n = static_cast<size_t>(a.N);
    std::vector<float> rewards(n), out(n);
    std::vector<int32_t> ids(n);
    detail::check(cudaMemcpyAsync(rewards.data(), a.rewards, n * sizeof(float), cudaMemcpyDeviceToHost, stream),
                  "groupAdvantages (rewards to host)");
    toHost(ids.data(), a.groupIds, n * sizeof(int32_t), stream, "groupAdvantages (ids to host)");
    GroupAdvantagesArgs host = a;
    host.rewards = rewards.data();
    host.groupIds = ids.data();
    host.out = out.data();
    groupAdvantagesCpu(host);
    detail::check(cudaMemcpyAsync(a.out, out.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream),
                  "groupAdvantages (advantages to device)");
    detail::check(cudaStreamSynchronize(stream), "groupAdvantages (advantages to device)");
    return;
  }
  if (a.N % a.groupSize != 0)
    throw KernelError(ErrorKind::Range, "groupAdvantages: groupSize " + std::to_string(a.groupSize) +
                                            " does not divide N " + std::to_string(a.N));
  const bool batch = a.estimator == GroupEstimator::Grpo && a.scale == GroupScale::Batch;
  Carver sizing(nullptr);
  carveReduction<Moments>(sizing, batch ? a.N : 0);
  detail::ScratchLease lease(device, std::max<size_t>(sizing.bytes(), 1));
  Carver carver(lease.data());
  const auto r = carveReduction<Moments>(carver, batch ? a.N : 0);
  const Moments* batchMoments =
      batch ? reduceTerms(RewardMoments{a.rewards}, a.N, r.partials, r.spare, stream, "groupAdvantages (batch std)")
            : nullptr;
  detail::launchWarpRows<kWarps>(a.N / a.groupSize, [&](int64_t first, unsigned blocks) {
    groupAdvantagesKernel<<<blocks, kThreads, 0, stream>>>(a, batchMoments, first);
    detail::checkLaunch("groupAdvantages");
  });
}

}  // namespace cuda
}  // namespace rlhf
