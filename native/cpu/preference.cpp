// The optimised CPU entry points of the preference family: pairs and rows spread over the thread
// pool, reductions over fixed blocks combined in block order (the same bits for any thread count).
#include <algorithm>
#include <cmath>
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
// B is a few thousand rewards in practice, so one thread: the work is in finding the groups.
// Contiguous groups need no lookup; group ids are mapped to slots once. Sums run in row order, in
// two passes (mean, then squared deviations), as the reference does, and each group's mean and
// std are formed once: the results are the reference's bits. (Formed again for every row, with
// a division to find each row's group, 65536 rewards took 1.2 ms.)

namespace {

struct GroupSums {
  double count = 0, sum = 0, m2 = 0;
  double mean = 0, std = 0;  // once the sums are in (setMean), and m2 (setStd)
  void setMean() { mean = count > 0 ? sum / count : 0.0; }
  void setStd() { std = count > 1 ? std::sqrt(m2 / (count - 1)) : 0.0; }
};

double advantageOf(const GroupAdvantagesArgs& a, double x, const GroupSums& g, double batchStd) {
  if (std::isnan(x)) return 0.0;
  switch (a.estimator) {
    case GroupEstimator::Grpo: {
      const double centred = x - g.mean;
      if (a.scale == GroupScale::Group) return centred / (g.std + a.eps);
      if (a.scale == GroupScale::Batch) return centred / (batchStd + a.eps);
      return centred;
    }
    case GroupEstimator::Rloo: return g.count > 1 ? (g.count * x - g.sum) / (g.count - 1) : 0.0;
    case GroupEstimator::ReinforceBaseline: return x - g.mean;
  }
  return 0.0;
}

// The batch's std over every non-NaN reward.
double batchStdOf(const GroupAdvantagesArgs& a) {
  GroupSums all;
  for (int64_t i = 0; i < a.N; ++i)
    if (!std::isnan(a.rewards[i])) {
      all.sum += a.rewards[i];
      all.count += 1;
    }
  all.setMean();
  for (int64_t i = 0; i < a.N; ++i)
    if (!std::isnan(a.rewards[i])) all.m2 += (a.rewards[i] - all.mean) * (a.rewards[i] - all.mean);
  all.setStd();
  return all.std;
}

// Calls fn(i, group) for every row in row order: groups of groupSize in turn, or by groupIds,
// numbered in order of first appearance (slot, filled here).
template <typename Fn>
void forEachRow(const GroupAdvantagesArgs& a, const std::vector<int64_t>& slot, Fn fn) {
  if (a.groupSize > 0) {
    for (int64_t i0 = 0, group = 0; i0 < a.N; i0 += a.groupSize, ++group)
      for (int64_t i = i0; i < std::min(a.N, i0 + a.groupSize); ++i) fn(i, group);
  } else {
    for (int64_t i = 0; i < a.N; ++i) fn(i, slot[static_cast<size_t>(i)]);
  }
}

}  // namespace

void groupAdvantagesCpu(const GroupAdvantagesArgs& a) {
  if (kernelsForCall() == nullptr) return groupAdvantagesReference(a);
  const double batchStd = a.scale == GroupScale::Batch ? batchStdOf(a) : 0.0;
  std::vector<int64_t> slot;
  int64_t groups = 0;
  if (a.groupSize > 0) {
    groups = (a.N + a.groupSize - 1) / a.groupSize;
  } else {
    slot.resize(static_cast<size_t>(a.N));
    std::unordered_map<int32_t, int64_t> ids;
    for (int64_t i = 0; i < a.N; ++i) slot[i] = ids.emplace(a.groupIds[i], static_cast<int64_t>(ids.size())).first->second;
    groups = static_cast<int64_t>(ids.size());
  }
  std::vector<GroupSums> g(static_cast<size_t>(groups));
  forEachRow(a, slot, [&](int64_t i, int64_t k) {
    if (!std::isnan(a.rewards[i])) {
      g[k].sum += a.rewards[i];
      g[k].count += 1;
    }
  });
  for (GroupSums& s : g) s.setMean();
  forEachRow(a, slot, [&](int64_t i, int64_t k) {
    if (!std::isnan(a.rewards[i])) {
      const double d = a.rewards[i] - g[k].mean;
      g[k].m2 += d * d;
    }
  });
  for (GroupSums& s : g) s.setStd();
  forEachRow(a, slot, [&](int64_t i, int64_t k) {
    a.out[i] = static_cast<float>(advantageOf(a, a.rewards[i], g[k], batchStd));
  });
}

}  // namespace rlhf
