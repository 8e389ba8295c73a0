// The per-token formulas of the policy family in float64 (SEMANTICS.md §4-5), shared by the
// scalar reference, the per-token part of the fused actor loss on the CPU and the CUDA loss
// kernels (whose fast paths lie elsewhere: the loops over the vocabulary, the reductions), so
// that every backend computes a token's terms with the same operations.
#pragma once
#include <cmath>

#include "rlhf/host_device.h"
#include "rlhf/policy.h"

namespace rlhf {
namespace policy_math {

using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;

RLHF_HOST_DEVICE inline double clampSym(double x, double c) { return x > c ? c : (x < -c ? -c : x); }

// The logits' backward given the forward's log-prob lp and entropy H of a row forms
// p_j = exp((z_j - L)/tau), L = z_label - tau lp, and sums p_j and p_j log p_j on the way: 1 and
// -H when lp and H belong to the row. Within kGivenTolerance (times max(1, |H|) for H) they do,
// and the gradient is off by at most that share; float32 outputs of the forward miss by their
// rounding, about 1e-6 (half an ulp of lp, 2e-6 at lp = -40). A row that misses (stale values,
// NaN, another row's) is computed from its logits alone.
constexpr double kGivenTolerance = 1.0 / (1 << 16);

RLHF_HOST_DEVICE inline bool givenFitsRow(double sumP, double sumPLogP, bool entropy, double H) {
  if (!(fabs(sumP - 1) <= kGivenTolerance)) return false;  // NaN fails too
  return !entropy || fabs(sumPLogP / sumP + H) <= kGivenTolerance * fmax(1.0, fabs(H));
}

// A KL estimator of d = lp - ref and its derivative with respect to lp.
struct KlValue {
  double kl, grad;
};

RLHF_HOST_DEVICE inline KlValue klOf(double d, const KlOptions& o) {
  const bool ratioClamped = fabs(d) > o.clampLogRatio;
  const double dc = clampSym(d, o.clampLogRatio);
  double k = 0, g = 0;
  switch (o.estimator) {
    case KlEstimator::K1: k = dc; g = 1; break;
    case KlEstimator::K2: k = 0.5 * dc * dc; g = dc; break;
    case KlEstimator::K3: k = exp(-dc) + dc - 1; g = 1 - exp(-dc); break;
    case KlEstimator::Abs: k = fabs(dc); g = dc > 0 ? 1 : (dc < 0 ? -1 : 0); break;
  }
  if (ratioClamped) g = 0;
  if (fabs(k) > o.clampOutput) g = 0;
  k = clampSym(k, o.clampOutput);
  if (o.straightThrough) g = d;
  return {k, g};
}

// The clipped objective of one token with ratio r and advantage A.
struct TokenLoss {
  double l, dldr;
  bool clippedWins, lowerActive;
};

RLHF_HOST_DEVICE inline TokenLoss tokenLoss(double r, double A, const PolicyLossOptions& o) {
  const double unclipped = -A * r;
  const double clipped = -A * fmin(fmax(r, 1.0 - o.clipLow), 1.0 + o.clipHigh);
  TokenLoss t;
  t.clippedWins = clipped > unclipped;
  t.l = t.clippedWins ? clipped : unclipped;
  t.dldr = t.clippedWins ? 0.0 : -A;
  if (r != r || A != A) {  // NaN
    t.l = NAN;
    t.dldr = NAN;
  }
  t.lowerActive = false;
  if (o.dualClip > 0 && A < 0 && t.l > -A * o.dualClip) {
    t.l = -A * o.dualClip;
    t.dldr = 0;
    t.lowerActive = true;
  }
  return t;
}

// d(w l)/d(log-ratio) = w * dl/dr * r, 0 wherever dl/dr is 0 (even where r overflowed to inf).
RLHF_HOST_DEVICE inline double ratioGradient(double w, const TokenLoss& t, double r) { return t.dldr == 0 ? 0.0 : w * t.dldr * r; }

// Whether a token counts in clipfrac.
RLHF_HOST_DEVICE inline bool countsAsClipped(const TokenLoss& t, double r, const PolicyLossOptions& o) {
  return o.clipfracMode == ClipfracMode::Branch ? t.clippedWins : (r < 1.0 - o.clipLow || r > 1.0 + o.clipHigh);
}

}  // namespace policy_math
}  // namespace rlhf
