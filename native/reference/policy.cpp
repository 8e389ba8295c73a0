// Scalar references of the policy-gradient family (policy.h, SEMANTICS.md §1, §4-6): the
// plainest loops that follow the formulas, in float64, the ground truth every fast path is
// tested against. Float32 logits only (CUDA's half types are compared on rounded copies).
#include <cmath>
#include <vector>

#include "rlhf/error.h"
#include "rlhf/policy.h"
#include "policy_math.h"

namespace rlhf {

namespace {

using namespace policy_math;

// logsumexp_j(z_j/tau) and E = sum_j p_j z_j/tau of one row, in float64.
struct RowStats {
  double lse = 0, expected = 0;
};

RowStats rowStats(const float* z, int64_t V, double tau) {
  double m = -INFINITY;
  for (int64_t j = 0; j < V; ++j) m = std::fmax(m, z[j] / tau);
  bool nan = false;
  for (int64_t j = 0; j < V; ++j) nan |= std::isnan(z[j]);
  if (nan) return {NAN, NAN};
  double s = 0, u = 0;
  for (int64_t j = 0; j < V; ++j) {
    const double y = z[j] / tau;
    const double e = std::exp(y - m);
    s += e;
    if (e > 0) u += e * (y - m);  // p_j = 0 terms (y = -inf) count as 0
  }
  return {m + std::log(s), m + u / s};
}

// Valid-token counts of a [B,T] mask: per row, in total, rows with any.
struct Counts {
  std::vector<double> row;
  double total = 0, nonEmpty = 0;
};

Counts countValid(const uint8_t* mask, int64_t B, int64_t T, const int32_t* labels = nullptr,
                  int32_t ignoreIndex = 0) {
  Counts c;
  c.row.assign(static_cast<size_t>(B), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      const bool valid = (mask == nullptr || mask[i] != 0) && (labels == nullptr || labels[i] != ignoreIndex);
      c.row[b] += valid ? 1 : 0;
    }
    c.total += c.row[b];
    c.nonEmpty += c.row[b] > 0 ? 1 : 0;
  }
  return c;
}

std::vector<double> rowWeights(const Counts& c, const PolicyLossOptions& o, int64_t B) {
  std::vector<double> w(c.row.size());
  for (size_t b = 0; b < w.size(); ++b)
    w[b] = aggregationRowWeight(o.aggregation, o.normalizer, c.row[b], c.total, c.nonEmpty, static_cast<double>(B));
  return w;
}

// Per-token results of the policy loss that the actor loss builds on.
struct PolicyTokens {
  PolicyLossStats stats;
  std::vector<double> gradLp;  // d pg / d lp per token
};

PolicyTokens policyTokens(int64_t B, int64_t T, const std::vector<double>& lp, const float* old, const float* adv,
                          bool advPerRow, const std::vector<uint8_t>& valid, const PolicyLossOptions& o) {
  Counts c;
  c.row.assign(static_cast<size_t>(B), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) c.row[b] += valid[b * T + t];
    c.total += c.row[b];
    c.nonEmpty += c.row[b] > 0 ? 1 : 0;
  }
  const std::vector<double> w = rowWeights(c, o, B);
  PolicyTokens out;
  out.gradLp.assign(static_cast<size_t>(B * T), 0.0);
  double loss = 0, clipped = 0, lower = 0, kl2 = 0, kl3 = 0, klp = 0;
  for (int64_t b = 0; b < B; ++b) {
    // Sequence level: one log weight per row, the masked mean of the log-ratios.
    double seqD = 0;
    if (o.importance == ImportanceLevel::Sequence) {
      for (int64_t t = 0; t < T; ++t)
        if (valid[b * T + t]) seqD += lp[b * T + t] - old[b * T + t];
      seqD /= std::fmax(c.row[b], 1.0);
    }
    double rowLoss = 0, rowGradSum = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      if (!valid[i]) continue;
      const double A = advPerRow ? adv[b] : adv[i];
      const double dRaw = o.importance == ImportanceLevel::Sequence ? seqD : lp[i] - old[i];
      const bool clampActive = std::fabs(dRaw) > o.clampLogRatio;
      const double d = clampSym(dRaw, o.clampLogRatio);
      const double r = std::exp(d);
      const TokenLoss tl = tokenLoss(r, A, o);
      rowLoss += tl.l;
      const double g = clampActive ? 0.0 : ratioGradient(w[b], tl, r);
      if (o.importance == ImportanceLevel::Sequence) rowGradSum += g;
      else out.gradLp[i] = g;
      clipped += countsAsClipped(tl, r, o) ? 1 : 0;
      lower += tl.lowerActive ? 1 : 0;
      // The KL stats always take the token's own (clamped) log-ratio.
      const double dt = clampSym(lp[i] - old[i], o.clampLogRatio);
      kl2 += 0.5 * dt * dt;
      kl3 += std::exp(dt) - 1 - dt;
      klp += -dt;
    }
    loss += w[b] * rowLoss;
    if (o.importance == ImportanceLevel::Sequence) {
      // d seqD / d lp_bt = 1/max(n_b,1) for every valid token of the row.
      for (int64_t t = 0; t < T; ++t)
        if (valid[b * T + t]) out.gradLp[b * T + t] = rowGradSum / std::fmax(c.row[b], 1.0);
    }
  }
  const double n = c.total;
  out.stats.loss = loss;
  out.stats.clipfrac = n > 0 ? clipped / n : 0;
  out.stats.clipfracLower = n > 0 ? lower / n : 0;
  out.stats.approxKl = n > 0 ? kl2 / n : 0;
  out.stats.approxKlK3 = n > 0 ? kl3 / n : 0;
  out.stats.ppoKl = n > 0 ? klp / n : 0;
  return out;
}

std::vector<uint8_t> validOf(const uint8_t* mask, int64_t n) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = mask == nullptr || mask[i] != 0 ? 1 : 0;
  return v;
}

}  // namespace

static const float* f32Logits(const void* p, LogitsDtype dtype) {
  if (dtype != LogitsDtype::F32) throw KernelError(ErrorKind::Type, "the CPU kernels take float32 logits only");
  return static_cast<const float*>(p);
}

void logprobsReference(const LogprobsArgs& a) {
  const float* logits = f32Logits(a.logits, a.dtype);
  const double tau = a.temperature;
  for (int64_t i = 0; i < a.N; ++i) {
    const float* z = logits + i * a.V;
    if (a.labels[i] == a.ignoreIndex) {
      a.logprobs[i] = 0;
      if (a.entropy) a.entropy[i] = 0;
      continue;
    }
    const RowStats s = rowStats(z, a.V, tau);
    a.logprobs[i] = static_cast<float>(z[a.labels[i]] / tau - s.lse);
    if (a.entropy) a.entropy[i] = static_cast<float>(s.lse - s.expected);
  }
}

void logprobsBackwardReference(const LogprobsBackwardArgs& a) {
  const float* logits = f32Logits(a.logits, a.dtype);
  float* dz = static_cast<float*>(a.gradLogits);
  const double tau = a.temperature;
  for (int64_t i = 0; i < a.N; ++i) {
    const float* z = logits + i * a.V;
    float* g = dz + i * a.V;
    if (a.labels[i] == a.ignoreIndex) {
      for (int64_t j = 0; j < a.V; ++j) g[j] = 0;
      continue;
    }
    const RowStats s = rowStats(z, a.V, tau);
    const double gLp = a.gradLogprobs[i], gH = a.gradEntropy ? a.gradEntropy[i] : 0.0;
    for (int64_t j = 0; j < a.V; ++j) {
      const double y = z[j] / tau;
      const double p = std::exp(y - s.lse);
      const double onehot = j == a.labels[i] ? 1.0 : 0.0;
      const double entropyTerm = p > 0 ? p * (y - s.expected) * gH : 0.0;
      g[j] = static_cast<float>(((onehot - p) * gLp - entropyTerm) / tau);
    }
  }
}

void klPenaltyReference(const KlPenaltyArgs& a) {
  for (int64_t i = 0; i < a.n; ++i) {
    const KlValue k = klOf(static_cast<double>(a.logprobs[i]) - a.refLogprobs[i], a.o);
    a.kl[i] = static_cast<float>(k.kl);
    a.grad[i] = static_cast<float>(k.grad);
  }
}

void shapeRewardsReference(const ShapeRewardsArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    int64_t last = -1;
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t i = b * a.T + t;
      a.rewards[i] = a.mask[i] ? static_cast<float>(-static_cast<double>(a.klCoef) * a.kl[i]) : 0.0f;
      if (a.mask[i]) last = t;
    }
    double score = a.scores[b];
    if (a.hasEos != nullptr && a.hasEos[b] == 0) score -= a.missingEosPenalty;
    score = clampSym(score, a.scoreClip);
    int64_t at = last;
    if (a.placement == ScorePlacement::AfterLast) at = last + 1 < a.T ? last + 1 : last;
    if (at >= 0) a.rewards[b * a.T + at] = static_cast<float>(a.rewards[b * a.T + at] + score);
  }
}

PolicyLossStats policyLossReference(const PolicyLossArgs& a) {
  const int64_t n = a.B * a.T;
  std::vector<double> lp(a.logprobs, a.logprobs + n);
  const PolicyTokens p =
      policyTokens(a.B, a.T, lp, a.oldLogprobs, a.advantages, a.advantagesPerRow, validOf(a.mask, n), a.o);
  for (int64_t i = 0; i < n; ++i) a.grad[i] = static_cast<float>(p.gradLp[i]);
  return p.stats;
}

ValueLossStats valueLossReference(const ValueLossArgs& a) {
  const Counts c = countValid(a.mask, a.B, a.T);
  PolicyLossOptions agg;
  agg.aggregation = a.aggregation;
  agg.normalizer = a.normalizer;
  const std::vector<double> w = rowWeights(c, agg, a.B);
  double loss = 0, clipped = 0, sumR = 0, sumErr = 0;
  for (int64_t b = 0; b < a.B; ++b) {
    double rowLoss = 0;
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t i = b * a.T + t;
      if (a.mask != nullptr && a.mask[i] == 0) {
        a.grad[i] = 0;
        continue;
      }
      const double v = a.values[i], R = a.returns[i];
      const double unclipped = (v - R) * (v - R);
      double l = unclipped, dldv = 2 * (v - R);
      if (a.clip != kNoClamp) {
        const double lo = a.oldValues[i] - static_cast<double>(a.clip), hi = a.oldValues[i] + static_cast<double>(a.clip);
        const double vc = std::isnan(lo) ? NAN : (v < lo ? lo : (v > hi ? hi : v));
        const double clippedLoss = (vc - R) * (vc - R);
        if (clippedLoss > unclipped) {
          l = clippedLoss;
          dldv = (v < lo || v > hi) ? 0.0 : 2 * (v - R);
          clipped += 1;
        } else if (std::isnan(clippedLoss)) {
          l = NAN;
          dldv = NAN;
        }
      }
      rowLoss += l;
      a.grad[i] = static_cast<float>(0.5 * w[b] * dldv);
      sumR += R;
      sumErr += R - v;
    }
    loss += w[b] * rowLoss;
  }
  ValueLossStats s;
  s.loss = 0.5 * loss;
  s.vfClipfrac = c.total > 0 ? clipped / c.total : 0;
  // Population variances in a second pass about the means, as numpy's var.
  const double meanR = sumR / c.total, meanErr = sumErr / c.total;
  double varR = 0, varErr = 0;
  for (int64_t i = 0; i < a.B * a.T; ++i) {
    if (a.mask != nullptr && a.mask[i] == 0) continue;
    const double R = a.returns[i], e = R - a.values[i];
    varR += (R - meanR) * (R - meanR);
    varErr += (e - meanErr) * (e - meanErr);
  }
  s.explainedVariance = c.total > 0 && varR > 0 ? 1 - varErr / varR : NAN;
  return s;
}

ActorLossStats actorLossReference(const ActorLossArgs& a) {
  const float* logits = f32Logits(a.logits, a.dtype);
  const int64_t n = a.B * a.T, V = a.V;
  const double tau = a.temperature;
  std::vector<uint8_t> valid = validOf(a.mask, n);
  for (int64_t i = 0; i < n; ++i)
    if (a.labels[i] == a.ignoreIndex) valid[i] = 0;
  std::vector<double> lp(static_cast<size_t>(n), 0.0), H(static_cast<size_t>(n), 0.0);
  std::vector<RowStats> stats(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!valid[i]) continue;
    stats[i] = rowStats(logits + i * V, V, tau);
    lp[i] = logits[i * V + a.labels[i]] / tau - stats[i].lse;
    H[i] = stats[i].lse - stats[i].expected;
  }
  const PolicyTokens p =
      policyTokens(a.B, a.T, lp, a.oldLogprobs, a.advantages, a.advantagesPerRow, valid, a.o);

  Counts c;
  c.row.assign(static_cast<size_t>(a.B), 0.0);
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t t = 0; t < a.T; ++t) c.row[b] += valid[b * a.T + t];
    c.total += c.row[b];
    c.nonEmpty += c.row[b] > 0 ? 1 : 0;
  }
  const std::vector<double> w = rowWeights(c, a.o, a.B);
  const bool withKl = a.refLogprobs != nullptr && a.klCoef != 0;
  double ent = 0, kl = 0;
  std::vector<double> gLp(p.gradLp), gH(static_cast<size_t>(n), 0.0);
  for (int64_t b = 0; b < a.B; ++b) {
    double rowEnt = 0, rowKl = 0;
    for (int64_t t = 0; t < a.T; ++t) {
      const int64_t i = b * a.T + t;
      if (!valid[i]) continue;
      rowEnt += H[i];
      gH[i] = -static_cast<double>(a.entropyCoef) * w[b];
      if (withKl) {
        const KlValue k = klOf(lp[i] - a.refLogprobs[i], a.klOptions);
        rowKl += k.kl;
        gLp[i] += static_cast<double>(a.klCoef) * w[b] * k.grad;
      }
    }
    ent += w[b] * rowEnt;
    kl += w[b] * rowKl;
  }

  float* dz = static_cast<float*>(a.gradLogits);
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits + i * V;
    float* g = dz + i * V;
    if (a.logprobs) a.logprobs[i] = static_cast<float>(lp[i]);
    if (a.entropy) a.entropy[i] = static_cast<float>(H[i]);
    if (!valid[i]) {
      for (int64_t j = 0; j < V; ++j) g[j] = 0;
      continue;
    }
    for (int64_t j = 0; j < V; ++j) {
      const double y = z[j] / tau;
      const double pj = std::exp(y - stats[i].lse);
      const double onehot = j == a.labels[i] ? 1.0 : 0.0;
      const double entropyTerm = pj > 0 ? pj * (y - stats[i].expected) * gH[i] : 0.0;
      g[j] = static_cast<float>(((onehot - pj) * gLp[i] - entropyTerm) / tau);
    }
  }
  ActorLossStats s;
  s.policy = p.stats;
  s.entropy = ent;
  s.kl = withKl ? kl : 0;
  s.loss = p.stats.loss + (withKl ? static_cast<double>(a.klCoef) * kl : 0.0) - static_cast<double>(a.entropyCoef) * ent;
  return s;
}

}  // namespace rlhf
