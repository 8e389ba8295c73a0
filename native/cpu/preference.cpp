// The optimised CPU entry points of the preference family: pairs and rows spread over the thread
// pool, reductions over fixed blocks combined in block order (the same bits for any thread count).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../reference/preference_math.h"
#include "blocks.h"
#include "cpu_variants.h"
#include "rlhf/preference.h"
#include "thread_pool.h"

namespace rlhf {

PairwiseLossStats pairwiseLossCpu(const PairwiseLossArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return pairwiseLossReference(a);
  PairwiseLossStats s;
  if (a.N == 0) return s;
  const bool streaming = streamedInStep(a.N, a.gradChosen, a.gradRejected, {a.chosen, a.rejected, a.margin});
  const std::vector<PairwiseBlock> parts = overBlocks<PairwiseBlock>(
      a.N, streaming, [&](int64_t i0, int64_t i1) { return k->pairwiseRange(a, i0, i1, streaming); });
  PairwiseBlock t;
  for (const PairwiseBlock& p : parts) {
    t.loss += p.loss;
    t.center += p.center;
    t.margin += p.margin;
    t.chosen += p.chosen;
    t.rejected += p.rejected;
    t.correct += p.correct;
  }
  const double n = static_cast<double>(a.N);
  s.loss = t.loss / n + static_cast<double>(a.centerCoef) * t.center / n;
  s.accuracy = static_cast<double>(t.correct) / n;
  s.meanMargin = t.margin / n;
  s.meanChosen = t.chosen / n;
  s.meanRejected = t.rejected / n;
  return s;
}

// --- the DPO family: float32 lanes over fixed blocks of pairs, sums in block order ----------------

DpoLossStats dpoLossCpu(const DpoLossArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return dpoLossReference(a);
  DpoLossStats s;
  if (a.N == 0) return s;
  const double delta = a.type == DpoLossType::BcoPair ? preference_math::bcoDelta(a) : 0.0;
  const bool streaming = streamedInStep(a.N, a.gradChosen, a.gradRejected,
                                       {a.policyChosen, a.policyRejected, a.refChosen, a.refRejected});
  const std::vector<DpoBlock> parts = overBlocks<DpoBlock>(
      a.N, streaming, [&](int64_t i0, int64_t i1) { return k->dpoRange(a, delta, i0, i1, streaming); });
  DpoBlock t;
  for (const DpoBlock& p : parts) {
    t.loss += p.loss;
    t.chosen += p.chosen;
    t.rejected += p.rejected;
    t.correct += p.correct;
  }
  const double n = static_cast<double>(a.N);
  s.loss = t.loss / n;
  s.rewardsChosen = t.chosen / n;
  s.rewardsRejected = t.rejected / n;
  s.accuracy = t.correct / n;
  s.margin = (t.chosen - t.rejected) / n;
  return s;
}

static int64_t rowGrain(int64_t T) { return std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(T, 1)); }

void sequenceLogprobsCpu(const SequenceLogprobsArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return sequenceLogprobsReference(a);
  parallelFor(a.B, rowGrain(a.T), 1, [&](int64_t b0, int64_t b1) {
    std::vector<MaskedSum> sums(static_cast<size_t>(b1 - b0));
    k->maskedRowSums(a.tokenLogprobs + b0 * a.T, a.mask ? a.mask + b0 * a.T : nullptr, a.T, b1 - b0, sums.data());
    for (int64_t b = b0; b < b1; ++b) {
      const MaskedSum& r = sums[static_cast<size_t>(b - b0)];
      a.out[b] = static_cast<float>(a.average ? (r.count > 0 ? r.sum / r.count : 0.0) : r.sum);
    }
  });
}

// Each row's factor from its count of valid tokens (countNonZero), then the row in one pass. (The
// reference's loop, run on each thread's rows, did not vectorise: 13% of the triad.)
void sequenceLogprobsBackwardCpu(const SequenceLogprobsBackwardArgs& a) {
  const ChunkKernels* k = kernelsForCall();
  if (k == nullptr) return sequenceLogprobsBackwardReference(a);
  const int64_t T = a.T;
  std::vector<float> scale(static_cast<size_t>(a.B));
  const MaskedScaleRows rows{nullptr, a.mask, T, scale.data(), nullptr, nullptr, a.out};
  parallelFor(a.B, rowGrain(T), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const double n = a.mask != nullptr ? static_cast<double>(k->countNonZero(a.mask + b * T, T)) : static_cast<double>(T);
      const double g = a.average ? (n > 0 ? a.gradSequence[b] / n : 0.0) : a.gradSequence[b];
      scale[static_cast<size_t>(b)] = static_cast<float>(g);
    }
    k->maskedScaleRows(rows, b0, b1, isStreaming(a.B * T));
  });
}

// --- group advantages ------------------------------------------------------------------------------
// Sums run in row order, in two passes (mean, then squared deviations), as the reference does, and
// each group's mean and std are formed once: the results are the reference's bits. Consecutive
// groups of groupSize are independent of each other: they are spread over the pool, eight at a
// time in step so that their chains of float64 additions overlap (one group at a time, each
// addition waited on the one before), and the estimator is chosen once a group rather than once a
// row. On the 2-core AMD machine, against one thread taking the groups one at a time (two addons
// in one process, calls alternated): 1M rewards in groups of 16, 3.6 -> 1.3 ms; 65536 in groups
// of 64, 474 -> 256 us; 4096 in groups of 16, 15.9 -> 11.5 us. Group ids are mapped to slots
// once; those rows, in any order, run in one thread.

namespace {

struct GroupSums {
  double count = 0, sum = 0, m2 = 0;
  double mean = 0, std = 0;  // once the sums are in (setMean), and m2 (setStd)
  void setMean() { mean = count > 0 ? sum / count : 0.0; }
  void setStd() { std = count > 1 ? std::sqrt(m2 / (count - 1)) : 0.0; }
};

// The advantages of the n rewards at r, members of group g, into out (0 for a NaN reward): the
// estimator is chosen once, outside the loop over the rows.
void advantagesOf(const GroupAdvantagesArgs& a, const float* r, float* out, int64_t n, const GroupSums& g,
                  double batchStd) {
  const auto each = [&](auto advantage) {
    for (int64_t i = 0; i < n; ++i)
      out[i] = std::isnan(r[i]) ? 0.0f : static_cast<float>(advantage(static_cast<double>(r[i])));
  };
  const double mean = g.mean;
  switch (a.estimator) {
    case GroupEstimator::Grpo: {
      if (a.scale == GroupScale::None) return each([=](double x) { return x - mean; });
      const double scale = (a.scale == GroupScale::Group ? g.std : batchStd) + a.eps;
      return each([=](double x) { return (x - mean) / scale; });
    }
    case GroupEstimator::Rloo: {
      if (g.count <= 1) return each([](double) { return 0.0; });
      const double count = g.count, sum = g.sum, others = g.count - 1;
      return each([=](double x) { return (count * x - sum) / others; });
    }
    case GroupEstimator::ReinforceBaseline: return each([=](double x) { return x - mean; });
  }
}

// The sums of the non-NaN rewards at rows [i0, i1): the mean, then the squared deviations.
GroupSums sumsOf(const float* r, int64_t i0, int64_t i1) {
  GroupSums s;
  for (int64_t i = i0; i < i1; ++i)
    if (!std::isnan(r[i])) {
      s.sum += r[i];
      s.count += 1;
    }
  s.setMean();
  for (int64_t i = i0; i < i1; ++i)
    if (!std::isnan(r[i])) s.m2 += (r[i] - s.mean) * (r[i] - s.mean);
  s.setStd();
  return s;
}

// kInStep whole groups of `size` rows from row i0, lane by lane: each lane performs sumsOf's
// operations in its order (a NaN adds +0.0, which leaves a sum that starts at +0.0 as it is), so
// that the groups' chains of additions interleave.
constexpr int kInStep = 8;
void groupsInStep(const GroupAdvantagesArgs& a, int64_t i0, int64_t size, double batchStd) {
  const float* r = a.rewards + i0;
  GroupSums g[kInStep];
  for (int64_t j = 0; j < size; ++j)
    for (int l = 0; l < kInStep; ++l) {
      const float x = r[l * size + j];
      const bool valid = !std::isnan(x);
      g[l].sum += valid ? x : 0.0;
      g[l].count += valid ? 1.0 : 0.0;
    }
  for (GroupSums& s : g) s.setMean();
  for (int64_t j = 0; j < size; ++j)
    for (int l = 0; l < kInStep; ++l) {
      const float x = r[l * size + j];
      g[l].m2 += std::isnan(x) ? 0.0 : (x - g[l].mean) * (x - g[l].mean);
    }
  for (int l = 0; l < kInStep; ++l) {
    g[l].setStd();
    advantagesOf(a, r + l * size, a.out + i0 + l * size, size, g[l], batchStd);
  }
}

void consecutiveGroups(const GroupAdvantagesArgs& a, double batchStd) {
  const int64_t size = a.groupSize, groups = (a.N + size - 1) / size;
  // Shares of whole lines of output where the group size allows it.
  const int64_t align = static_cast<int64_t>(kLine) / std::gcd(size, static_cast<int64_t>(kLine));
  parallelFor(groups, std::max<int64_t>(1, kMinElementsPerThread / size), align, [&](int64_t k0, int64_t k1) {
    int64_t k = k0;
    for (; k + kInStep <= k1 && (k + kInStep) * size <= a.N; k += kInStep) groupsInStep(a, k * size, size, batchStd);
    for (; k < k1; ++k) {
      const int64_t i0 = k * size, i1 = std::min(a.N, i0 + size);
      advantagesOf(a, a.rewards + i0, a.out + i0, i1 - i0, sumsOf(a.rewards, i0, i1), batchStd);
    }
  });
}

void groupsById(const GroupAdvantagesArgs& a, double batchStd) {
  std::vector<int64_t> slot(static_cast<size_t>(a.N));
  std::unordered_map<int32_t, int64_t> ids;
  for (int64_t i = 0; i < a.N; ++i) slot[i] = ids.emplace(a.groupIds[i], static_cast<int64_t>(ids.size())).first->second;
  std::vector<GroupSums> g(ids.size());
  for (int64_t i = 0; i < a.N; ++i)
    if (!std::isnan(a.rewards[i])) {
      g[slot[i]].sum += a.rewards[i];
      g[slot[i]].count += 1;
    }
  for (GroupSums& s : g) s.setMean();
  for (int64_t i = 0; i < a.N; ++i)
    if (!std::isnan(a.rewards[i])) {
      const double d = a.rewards[i] - g[slot[i]].mean;
      g[slot[i]].m2 += d * d;
    }
  for (GroupSums& s : g) s.setStd();
  for (int64_t i = 0; i < a.N; ++i) advantagesOf(a, a.rewards + i, a.out + i, 1, g[slot[i]], batchStd);
}

}  // namespace

void groupAdvantagesCpu(const GroupAdvantagesArgs& a) {
  if (kernelsForCall() == nullptr) return groupAdvantagesReference(a);
  const double batchStd = a.scale == GroupScale::Batch ? sumsOf(a.rewards, 0, a.N).std : 0.0;
  if (a.groupSize > 0) consecutiveGroups(a, batchStd);
  else groupsById(a, batchStd);
}

}  // namespace rlhf
