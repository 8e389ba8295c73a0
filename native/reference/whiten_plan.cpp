// Whitening presets (SEMANTICS.md §2), computed in float64 from the valid elements' moments.
#include <cmath>
#include <string>

#include "rlhf/error.h"
#include "rlhf/whiten.h"

namespace rlhf {

double maskedMeanFromMoments(const MaskedMoments& m) { return m.count > 0 ? m.mean : 0.0; }

static void requireValid(const MaskedMoments& m, double needed, const char* op) {
  if (m.count >= needed) return;
  throw KernelError(ErrorKind::Range,
                    std::string(op) + ": `mask` must select at least " +
                        std::to_string(static_cast<int>(needed)) +
                        " element(s) for this variance, but selects " +
                        std::to_string(static_cast<long long>(m.count)));
}

double maskedVarFromMoments(const MaskedMoments& m, bool unbiased, const char* op) {
  if (unbiased) {
    requireValid(m, 2, op);
    return m.m2 / (m.count - 1);
  }
  return m.count > 0 ? m.m2 / m.count : 0.0;
}

AffineArgs planWhiten(const MaskedMoments& m, const WhitenOptions& o) {
  const char* op = "maskedWhiten";
  double center = 0, scale = 1;
  switch (o.preset) {
    case WhitenPreset::Trl: {
      center = m.mean;
      scale = 1.0 / std::sqrt(maskedVarFromMoments(m, true, op) + o.eps);
      break;
    }
    case WhitenPreset::Verl: {
      // verl divides by (count + 1e-8) both for the mean and for the mean of squares, and
      // centres on that slightly shrunk mean before the Bessel correction.
      requireValid(m, 2, op);
      const double denom = m.count + 1e-8;
      center = m.mean * m.count / denom;
      const double shift = m.mean - center;
      const double sq = (m.m2 + m.count * shift * shift) / denom;
      scale = 1.0 / std::sqrt(sq * m.count / (m.count - 1) + o.eps);
      break;
    }
    case WhitenPreset::OpenRlhf: {
      requireValid(m, 1, op);
      center = m.mean;
      const double var = m.m2 / m.count;
      // A comparison, not fmax, so that a NaN variance stays NaN.
      scale = o.scaleByStd ? 1.0 / std::sqrt(var < o.eps ? o.eps : var) : 1.0;
      break;
    }
    case WhitenPreset::CleanRl: {
      center = m.mean;
      scale = 1.0 / (std::sqrt(maskedVarFromMoments(m, true, op)) + o.eps);
      break;
    }
  }
  AffineArgs a;
  a.center = static_cast<float>(center);
  a.scale = static_cast<float>(scale);
  a.shift = o.shiftMean ? 0.0f : static_cast<float>(center);
  return a;
}

}  // namespace rlhf
