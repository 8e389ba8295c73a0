// Scalar references of the preference family (preference.h, SEMANTICS.md §7-9): the plainest
// loops that follow the formulas, in float64.
#include <cmath>
#include <map>
#include <vector>

#include "rlhf/preference.h"
#include "preference_math.h"

namespace rlhf {

using namespace preference_math;

PairwiseLossStats pairwiseLossReference(const PairwiseLossArgs& a) {
  PairwiseLossStats s;
  const double n = static_cast<double>(a.N);
  double loss = 0, center = 0, correct = 0, margin = 0, chosen = 0, rejected = 0;
  for (int64_t i = 0; i < a.N; ++i) {
    const double rc = a.chosen[i], rr = a.rejected[i];
    const double m = a.margin != nullptr ? a.margin[i] : a.marginValue;
    const double delta = rc - rr - m;
    const double sum = rc + rr;
    loss += softplus(-delta);
    center += sum * sum;
    const double g = (sigmoid(delta) - 1) / n, c = 2 * static_cast<double>(a.centerCoef) * sum / n;
    a.gradChosen[i] = static_cast<float>(g + c);
    a.gradRejected[i] = static_cast<float>(-g + c);
    correct += rc > rr ? 1 : 0;
    margin += rc - rr;
    chosen += rc;
    rejected += rr;
  }
  if (a.N == 0) return s;
  s.loss = loss / n + static_cast<double>(a.centerCoef) * center / n;
  s.accuracy = correct / n;
  s.meanMargin = margin / n;
  s.meanChosen = chosen / n;
  s.meanRejected = rejected / n;
  return s;
}

DpoLossStats dpoLossReference(const DpoLossArgs& a) {
  DpoLossStats s;
  if (a.N == 0) return s;
  const double n = static_cast<double>(a.N), beta = a.beta;
  const double delta = a.type == DpoLossType::BcoPair ? bcoDelta(a) : 0.0;
  double loss = 0, chosen = 0, rejected = 0, correct = 0;
  for (int64_t i = 0; i < a.N; ++i) {
    const double x = static_cast<double>(a.policyChosen[i]) - a.refChosen[i];
    const double y = static_cast<double>(a.policyRejected[i]) - a.refRejected[i];
    const double nc = a.chosenLengths ? a.chosenLengths[i] : 0, nr = a.rejectedLengths ? a.rejectedLengths[i] : 0;
    const DpoPair p = dpoPair(a.type, x, y, nc, nr, beta, a.labelSmoothing, a.discopopTau, delta);
    loss += p.l;
    a.gradChosen[i] = static_cast<float>(p.dldx / n);
    a.gradRejected[i] = static_cast<float>(p.dldy / n);
    chosen += beta * x;
    rejected += beta * y;
    correct += beta * x > beta * y ? 1 : 0;
  }
  s.loss = loss / n;
  s.rewardsChosen = chosen / n;
  s.rewardsRejected = rejected / n;
  s.accuracy = correct / n;
  s.margin = (chosen - rejected) / n;
  return s;
}

void sequenceLogprobsReference(const SequenceLogprobsArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    double sum = 0, n = 0;
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t i = b * a.T + t;
      if (a.mask != nullptr && a.mask[i] == 0) continue;
      sum += a.tokenLogprobs[i];
      n += 1;
    }
    a.out[b] = static_cast<float>(a.average ? (n > 0 ? sum / n : 0.0) : sum);
  }
}

void sequenceLogprobsBackwardReference(const SequenceLogprobsBackwardArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    double n = 0;
    for (int64_t t = 0; t < a.T; ++t) n += a.mask == nullptr || a.mask[b * a.T + t] != 0 ? 1 : 0;
    const double g = a.average ? (n > 0 ? a.gradSequence[b] / n : 0.0) : a.gradSequence[b];
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t i = b * a.T + t;
      a.out[i] = a.mask == nullptr || a.mask[i] != 0 ? static_cast<float>(g) : 0.0f;
    }
  }
}

namespace {

// Count, mean and unbiased std of the non-NaN rewards of one group, two passes in float64.
struct GroupStats {
  double count = 0, mean = 0, std = 0, sum = 0;
};

GroupStats statsOf(const std::vector<double>& r) {
  GroupStats g;
  for (double x : r) {
    g.sum += x;
    g.count += 1;
  }
  if (g.count == 0) return g;
  g.mean = g.sum / g.count;
  double m2 = 0;
  for (double x : r) m2 += (x - g.mean) * (x - g.mean);
  g.std = g.count > 1 ? std::sqrt(m2 / (g.count - 1)) : 0.0;
  return g;
}

}  // namespace

void groupAdvantagesReference(const GroupAdvantagesArgs& a) {
  // Rows of each group, in order of first appearance.
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t i = 0; i < a.N; ++i) groups[a.groupSize > 0 ? i / a.groupSize : a.groupIds[i]].push_back(i);
  std::vector<double> all;
  for (int64_t i = 0; i < a.N; ++i)
    if (!std::isnan(a.rewards[i])) all.push_back(a.rewards[i]);
  const GroupStats batch = statsOf(all);
  for (const auto& [id, rows] : groups) {
    std::vector<double> r;
    for (int64_t i : rows)
      if (!std::isnan(a.rewards[i])) r.push_back(a.rewards[i]);
    const GroupStats g = statsOf(r);
    for (int64_t i : rows) {
      const double x = a.rewards[i];
      double adv = 0;
      if (!std::isnan(x)) {
        switch (a.estimator) {
          case GroupEstimator::Grpo: {
            const double centred = x - g.mean;
            if (a.scale == GroupScale::Group) adv = centred / (g.std + a.eps);
            else if (a.scale == GroupScale::Batch) adv = centred / (batch.std + a.eps);
            else adv = centred;
            break;
          }
          case GroupEstimator::Rloo: adv = g.count > 1 ? (g.count * x - g.sum) / (g.count - 1) : 0.0; break;
          case GroupEstimator::ReinforceBaseline: adv = x - g.mean; break;
        }
      }
      a.out[i] = static_cast<float>(adv);
    }
  }
}

}  // namespace rlhf
