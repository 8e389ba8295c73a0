// The preference kernel family (SEMANTICS.md §7-9): the pairwise reward-model loss, the DPO
// family, sequence log-probs from token log-probs, and group-relative advantages. Conventions as
// in kernels.h and policy.h: one argument struct per op shared by `<op>Reference`, `<op>Cpu` and
// `cuda::<op>`; losses are means over pairs reduced in float64 in a fixed order, with the
// gradient of the returned loss with respect to each trainable input.
#pragma once
#include <cstdint>

namespace rlhf {

// --- §7 pairwise (Bradley-Terry) reward-model loss ----------------------------------------------
//   delta = rc - rr - margin,  loss = mean(softplus(-delta)) + centerCoef * mean((rc + rr)^2)
//   d/drc = (sig(delta) - 1)/N + 2 centerCoef (rc + rr)/N,  d/drr = (1 - sig(delta))/N + 2 centerCoef (rc + rr)/N
// softplus(-delta) = -logsig(delta) is computed as max(-delta, 0) + log1p(exp(-|delta|)), exact
// for margins of +-100. Stats: accuracy mean(rc > rr), meanMargin mean(rc - rr), and the means.
struct PairwiseLossArgs {
  int64_t N = 0;
  const float* chosen = nullptr;
  const float* rejected = nullptr;
  const float* margin = nullptr;  // [N], or null: marginValue for every pair
  float marginValue = 0.0f;
  float centerCoef = 0.0f;
  float* gradChosen = nullptr;
  float* gradRejected = nullptr;
};

struct PairwiseLossStats {
  double loss = 0, accuracy = 0, meanMargin = 0, meanChosen = 0, meanRejected = 0;
};

// --- §8 the DPO family -----------------------------------------------------------------------------
// x = policyChosen - refChosen, y = policyRejected - refRejected, h = x - y; loss = mean over pairs
// of the type's per-pair loss (formulas in native/reference/preference.cpp, as in TRL's DPO
// trainer). Stats: rewardsChosen mean(beta x), rewardsRejected mean(beta y), accuracy
// mean(beta x > beta y), margin mean(beta (x - y)).
enum class DpoLossType : int32_t {
  Sigmoid = 0, Robust = 1, Hinge = 2, Ipo = 3, SigmoidNorm = 4, ExoPair = 5, NcaPair = 6, BcoPair = 7,
  SppoHard = 8, ApoZero = 9, ApoDown = 10, Discopop = 11,
};

struct DpoLossArgs {
  int64_t N = 0;
  const float* policyChosen = nullptr;
  const float* policyRejected = nullptr;
  const float* refChosen = nullptr;
  const float* refRejected = nullptr;
  const int32_t* chosenLengths = nullptr;    // [N] or null (the types that normalise need them)
  const int32_t* rejectedLengths = nullptr;  // [N] or null
  DpoLossType type = DpoLossType::Sigmoid;
  float beta = 0.1f;
  float labelSmoothing = 0.0f;
  float discopopTau = 0.05f;
  float* gradChosen = nullptr;    // d loss / d policyChosen
  float* gradRejected = nullptr;  // d loss / d policyRejected
};

struct DpoLossStats {
  double loss = 0, rewardsChosen = 0, rewardsRejected = 0, accuracy = 0, margin = 0;
};

// --- §8 sequence log-probs ---------------------------------------------------------------------------
// out[b] = sum_t m lp (average: / n_b; a row with n_b = 0 gives 0), summed in float64 in order.
struct SequenceLogprobsArgs {
  int64_t B = 0, T = 0;
  const float* tokenLogprobs = nullptr;  // [B,T]
  const uint8_t* mask = nullptr;         // [B,T], or null: all valid
  bool average = false;
  float* out = nullptr;  // [B]
};

// out[b,t] = m[b,t] * gradSequence[b] (average: / n_b).
struct SequenceLogprobsBackwardArgs {
  int64_t B = 0, T = 0;
  const float* gradSequence = nullptr;  // [B]
  const uint8_t* mask = nullptr;
  bool average = false;
  float* out = nullptr;  // [B,T]
};

// --- §9 group-relative advantages --------------------------------------------------------------------
// Groups: consecutive runs of groupSize rows, or the rows sharing a groupIds value. NaN rewards
// get advantage 0 and are left out of their group's statistics.
//   Grpo: (r - mean_g) / (std_g + eps), std Bessel-corrected (0 for a group of one);
//         scale Batch divides by the batch's std + eps instead, None does not divide
//   Rloo: (G r - sum_g r) / (G - 1), G the group's valid rows (0 for a group of one)
//   ReinforceBaseline: r - mean_g
enum class GroupEstimator : int32_t { Grpo = 0, Rloo = 1, ReinforceBaseline = 2 };
enum class GroupScale : int32_t { Group = 0, Batch = 1, None = 2 };

struct GroupAdvantagesArgs {
  int64_t N = 0;
  const float* rewards = nullptr;
  int64_t groupSize = 0;             // > 0: consecutive groups; 0: groupIds
  const int32_t* groupIds = nullptr; // [N] when groupSize is 0
  GroupEstimator estimator = GroupEstimator::Grpo;
  GroupScale scale = GroupScale::Group;
  float eps = 1e-4f;
  float* out = nullptr;  // [N]
};

PairwiseLossStats pairwiseLossReference(const PairwiseLossArgs& a);
DpoLossStats dpoLossReference(const DpoLossArgs& a);
void sequenceLogprobsReference(const SequenceLogprobsArgs& a);
void sequenceLogprobsBackwardReference(const SequenceLogprobsBackwardArgs& a);
void groupAdvantagesReference(const GroupAdvantagesArgs& a);

PairwiseLossStats pairwiseLossCpu(const PairwiseLossArgs& a);
DpoLossStats dpoLossCpu(const DpoLossArgs& a);
void sequenceLogprobsCpu(const SequenceLogprobsArgs& a);
void sequenceLogprobsBackwardCpu(const SequenceLogprobsBackwardArgs& a);
void groupAdvantagesCpu(const GroupAdvantagesArgs& a);

}  // namespace rlhf
