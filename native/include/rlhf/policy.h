// The policy-gradient kernel family (SEMANTICS.md §1, §4-6): log-probs and entropy from logits
// and their backward, KL penalties, reward shaping, the clipped PPO policy loss, the value loss,
// and the fused actor loss from logits. Same conventions as kernels.h: plain pointers, one
// argument struct per op shared by `<op>Reference`, `<op>Cpu` and `cuda::<op>`.
//
// Losses reduce in float64 in a fixed order (token order within a row, rows in order), so the
// same inputs give the same bits for any thread count. Every loss returns its gradient with
// respect to the named input: the gradient of the returned scalar loss.
#pragma once
#include <cstdint>
#include <limits>

#include "rlhf/host_device.h"

namespace rlhf {

constexpr float kNoClamp = std::numeric_limits<float>::infinity();

// Element type of logits. float32 everywhere; float16 and bfloat16 on CUDA only (the gradient
// of such logits is written in the same type).
enum class LogitsDtype : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

// --- §1 log-probs and entropy from logits [N,V] ------------------------------------------------
//   lp_i = z_{i,y}/tau - logsumexp_j(z_{i,j}/tau)
//   H_i  = logsumexp(z/tau) - sum_j p_j z_j/tau       (terms with p_j = 0 count as 0)
// A row whose label is ignoreIndex gets lp = 0 and H = 0 (and a zero gradient). Labels have
// been checked by firstInvalidLabel: every other label is in [0, V).
struct LogprobsArgs {
  int64_t N = 0, V = 0;
  const void* logits = nullptr;  // [N,V] of `dtype`
  LogitsDtype dtype = LogitsDtype::F32;
  const int32_t* labels = nullptr;  // [N]
  float temperature = 1.0f;
  int32_t ignoreIndex = -100;
  float* logprobs = nullptr;  // [N]
  float* entropy = nullptr;   // [N], or null: not computed
};

//   dz_ij = (onehot_ij - p_ij) * gLp_i / tau - p_ij * (z_ij/tau - E_i) * gH_i / tau,
//   E_i = sum_j p_ij z_ij / tau.
struct LogprobsBackwardArgs {
  int64_t N = 0, V = 0;
  const void* logits = nullptr;  // [N,V] of `dtype`
  LogitsDtype dtype = LogitsDtype::F32;
  const int32_t* labels = nullptr;
  float temperature = 1.0f;
  int32_t ignoreIndex = -100;
  const float* gradLogprobs = nullptr;  // [N]
  const float* gradEntropy = nullptr;   // [N], or null: 0
  // The forward's outputs for these logits, or null. With them the CPU backward makes one pass
  // over a row instead of three, and checks that they fit the row (policy_math.h, givenFitsRow).
  const float* logprobs = nullptr;  // [N]
  const float* entropy = nullptr;   // [N]; used where gradEntropy != 0, and only with logprobs
  void* gradLogits = nullptr;       // [N,V] of `dtype`
};

// Index of the first label that is neither in [0, V) nor ignoreIndex, or -1.
int64_t firstInvalidLabelCpu(const int32_t* labels, int64_t n, int64_t V, int32_t ignoreIndex);

// --- §4 KL penalties and reward shaping --------------------------------------------------------
enum class KlEstimator : int32_t { K1 = 0, K2 = 1, K3 = 2, Abs = 3 };

// Elementwise on d = lp - ref:
//   d' = clamp(d, +-clampLogRatio)            (kNoClamp: none; the gradient is 0 where it clamps)
//   k1 = d', k2 = d'^2/2, k3 = exp(-d') + d' - 1, abs = |d'|
//   kl = clamp(k, +-clampOutput)              (the gradient is 0 where it clamps)
//   straightThrough: kl as above, grad = d (the gradient of k2 = d^2/2 on the raw d)
struct KlOptions {
  KlEstimator estimator = KlEstimator::K1;
  float clampLogRatio = kNoClamp;
  float clampOutput = kNoClamp;
  bool straightThrough = false;
};

struct KlPenaltyArgs {
  int64_t n = 0;
  const float* logprobs = nullptr;
  const float* refLogprobs = nullptr;
  KlOptions o;
  float* kl = nullptr;    // [n]
  float* grad = nullptr;  // [n] d kl / d logprobs
};

enum class ScorePlacement : int32_t { LastValid = 0, AfterLast = 1 };

// rewards[b,t] = -klCoef * kl[b,t] * m[b,t], plus the row's score at one position:
//   LastValid: the last t with m = 1 (a row with none gets no score);
//   AfterLast: the position after it when that is < T, else the last valid (TRL's current PPO;
//              a row with none puts it at t = 0).
// score = clamp(scores[b] - (hasEos && !hasEos[b] ? missingEosPenalty : 0), +-scoreClip).
struct ShapeRewardsArgs {
  int64_t B = 0, T = 0;
  const float* scores = nullptr;   // [B]
  const float* kl = nullptr;       // [B,T]
  const uint8_t* mask = nullptr;   // [B,T]
  const uint8_t* hasEos = nullptr; // [B] or null
  float klCoef = 0.0f;
  ScorePlacement placement = ScorePlacement::LastValid;
  float missingEosPenalty = 0.0f;
  float scoreClip = kNoClamp;
  float* rewards = nullptr;  // [B,T]
};

// --- §5-6 losses over [B,T] tokens ------------------------------------------------------------
// How per-token losses l[b,t] become one number: loss = sum_bt w[b,t] * l[b,t] with
//   TokenMean            m / sum(m)                      (0 when nothing is valid)
//   SeqMeanTokenMean     m / (n_b * rowsNonEmpty)        (verl; empty rows skipped)
//   SeqMeanTokenSum      m / rowsNonEmpty                (verl)
//   SeqMeanTokenSumNorm  m / normalizer                  (verl, Dr. GRPO; normalizer default T)
//   Grpo                 m / (max(n_b, 1) * B)           (TRL GRPO 'grpo')
//   Bnpo                 m / max(sum(m), 1)              (TRL 'bnpo')
//   DrGrpo               m / normalizer                  (TRL 'dr_grpo'; default B*T)
//   Dapo                 m / normalizer                  (TRL 'dapo'; a global token count)
// The caller resolves the default normalizer; the kernels take it as given.
enum class Aggregation : int32_t {
  TokenMean = 0, SeqMeanTokenMean = 1, SeqMeanTokenSum = 2, SeqMeanTokenSumNorm = 3,
  Grpo = 4, Bnpo = 5, DrGrpo = 6, Dapo = 7,
};

// The weight of each valid token of a row with n_b valid tokens, given the totals over the
// batch: valid tokens, rows with at least one, rows B. Every backend calls this (the CUDA one on
// the device) so that the weights round alike.
RLHF_HOST_DEVICE inline double aggregationRowWeight(Aggregation mode, double normalizer, double rowValid, double totalValid,
                                   double nonEmptyRows, double B) {
  switch (mode) {
    case Aggregation::TokenMean: return totalValid > 0 ? 1.0 / totalValid : 0.0;
    case Aggregation::SeqMeanTokenMean: return rowValid > 0 ? 1.0 / (rowValid * nonEmptyRows) : 0.0;
    case Aggregation::SeqMeanTokenSum: return nonEmptyRows > 0 ? 1.0 / nonEmptyRows : 0.0;
    case Aggregation::Grpo: return 1.0 / ((rowValid > 1 ? rowValid : 1.0) * B);
    case Aggregation::Bnpo: return 1.0 / (totalValid > 1 ? totalValid : 1.0);
    case Aggregation::SeqMeanTokenSumNorm:
    case Aggregation::DrGrpo:
    case Aggregation::Dapo: return 1.0 / normalizer;
  }
  return 0.0;
}

enum class ImportanceLevel : int32_t { Token = 0, Sequence = 1 };
// Which tokens clipfrac counts: Branch, where the clipped branch strictly wins (TRL, verl,
// OpenRLHF); Ratio, where r < 1-clipLow or r > 1+clipHigh (CleanRL).
enum class ClipfracMode : int32_t { Branch = 0, Ratio = 1 };

struct PolicyLossOptions {
  float clipLow = 0.2f, clipHigh = 0.2f;
  float dualClip = 0.0f;             // 0: off; else > 1
  float clampLogRatio = kNoClamp;    // on the log-ratio before exp (both importance levels)
  Aggregation aggregation = Aggregation::TokenMean;
  double normalizer = 0;             // for SeqMeanTokenSumNorm, DrGrpo, Dapo
  ImportanceLevel importance = ImportanceLevel::Token;
  ClipfracMode clipfracMode = ClipfracMode::Branch;
};

// Per token, d = lp - old (clamped), r = exp(d) (Sequence: d_b = sum_t m d / max(n_b,1), one
// r per row, d/dlp_bt = m_bt / max(n_b,1)):
//   l = max(-A r, -A clip(r, 1-clipLow, 1+clipHigh));  dual clip, A < 0: l = min(l, -A c)
//   dl/dr = -A where the unclipped branch is active, else 0.
// Stats are masked means over valid tokens (0 when none): clipfrac, clipfracLower (A < 0 and
// the dual clip is active), approxKl = mean(d^2)/2, approxKlK3 = mean(exp(d) - 1 - d),
// ppoKl = mean(-d), all on the token-level (clamped) d.
struct PolicyLossStats {
  double loss = 0, clipfrac = 0, clipfracLower = 0, approxKl = 0, approxKlK3 = 0, ppoKl = 0;
};

struct PolicyLossArgs {
  int64_t B = 0, T = 0;
  const float* logprobs = nullptr;     // [B,T]
  const float* oldLogprobs = nullptr;  // [B,T]
  const float* advantages = nullptr;   // [B,T], or [B] (one per row) when advantagesPerRow
  bool advantagesPerRow = false;
  const uint8_t* mask = nullptr;       // [B,T], or null: all valid
  PolicyLossOptions o;
  float* grad = nullptr;               // [B,T] d loss / d logprobs
};

// l = max((v-R)^2, (clip(v, vOld-clip, vOld+clip) - R)^2) (clip = kNoClamp: (v-R)^2),
// loss = 0.5 * sum w l. vfClipfrac: masked mean of [clipped term > unclipped term];
// explainedVariance = 1 - Var(R-v)/Var(R) over valid tokens (population variances; NaN when
// Var(R) = 0 or nothing is valid, as CleanRL).
struct ValueLossStats {
  double loss = 0, vfClipfrac = 0, explainedVariance = 0;
};

struct ValueLossArgs {
  int64_t B = 0, T = 0;
  const float* values = nullptr;     // [B,T]
  const float* oldValues = nullptr;  // [B,T]; may be null only when clip == kNoClamp
  const float* returns = nullptr;    // [B,T]
  const uint8_t* mask = nullptr;     // [B,T] or null
  float clip = kNoClamp;
  Aggregation aggregation = Aggregation::TokenMean;
  double normalizer = 0;
  float* grad = nullptr;             // [B,T] d loss / d values
};

// --- §5 the fused actor loss from logits -------------------------------------------------------
// Logits [B*T, V] of the response tokens, labels [B*T]; tokens with m = 0 (or label ==
// ignoreIndex, which counts as m = 0) take no part. With lp and H from §1:
//   loss = pg + klCoef * kl - entropyCoef * ent,
//   pg the PPO policy loss of lp (PolicyLossOptions), kl = agg(KL(lp, ref)) with `kl`
//   options (no term when refLogprobs is null or klCoef = 0), ent = agg(H) (no term when
//   entropyCoef = 0), all three with the same aggregation weights.
// gradLogits is d loss / d logits; logprobs and entropy ([B*T], optional) receive lp and H of the
// tokens that take part, 0 elsewhere (masked tokens' logits are never read: they are padding).
struct ActorLossStats {
  PolicyLossStats policy;  // policy.loss is pg
  double loss = 0, entropy = 0, kl = 0;  // total, agg(H), agg(KL)
};

struct ActorLossArgs {
  int64_t B = 0, T = 0, V = 0;
  const void* logits = nullptr;  // [B*T, V] of dtype
  LogitsDtype dtype = LogitsDtype::F32;
  const int32_t* labels = nullptr;  // [B*T]
  float temperature = 1.0f;
  int32_t ignoreIndex = -100;
  const float* oldLogprobs = nullptr;  // [B*T]
  const float* advantages = nullptr;   // [B*T] or [B] when advantagesPerRow
  bool advantagesPerRow = false;
  const float* refLogprobs = nullptr;  // [B*T] or null
  const uint8_t* mask = nullptr;       // [B*T] or null
  PolicyLossOptions o;
  float entropyCoef = 0.0f, klCoef = 0.0f;
  KlOptions klOptions;
  void* gradLogits = nullptr;  // [B*T, V] of dtype
  float* logprobs = nullptr;   // [B*T] or null
  float* entropy = nullptr;    // [B*T] or null
};

void logprobsReference(const LogprobsArgs& a);
void logprobsBackwardReference(const LogprobsBackwardArgs& a);
void klPenaltyReference(const KlPenaltyArgs& a);
void shapeRewardsReference(const ShapeRewardsArgs& a);
PolicyLossStats policyLossReference(const PolicyLossArgs& a);
ValueLossStats valueLossReference(const ValueLossArgs& a);
ActorLossStats actorLossReference(const ActorLossArgs& a);

void logprobsCpu(const LogprobsArgs& a);
void logprobsBackwardCpu(const LogprobsBackwardArgs& a);
void klPenaltyCpu(const KlPenaltyArgs& a);
void shapeRewardsCpu(const ShapeRewardsArgs& a);
PolicyLossStats policyLossCpu(const PolicyLossArgs& a);
ValueLossStats valueLossCpu(const ValueLossArgs& a);
ActorLossStats actorLossCpu(const ActorLossArgs& a);

}  // namespace rlhf
