// Scalar references for masked moments and the affine map used by whitening.
#include <cmath>

#include "rlhf/kernels.h"

namespace rlhf {

MaskedMoments maskedMomentsReference(const MaskedMomentsArgs& a) {
  double count = 0, sum = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    if (a.mask != nullptr && a.mask[i] == 0) continue;
    count += 1;
    sum += a.x[i];
  }
  MaskedMoments m;
  if (count == 0) return m;
  m.count = count;
  m.mean = sum / count;
  for (int64_t i = 0; i < a.n; ++i) {
    if (a.mask != nullptr && a.mask[i] == 0) continue;
    const double d = a.x[i] - m.mean;
    m.m2 += d * d;
  }
  return m;
}

void affineReference(const AffineArgs& a) {
  for (int64_t i = 0; i < a.n; ++i) a.out[i] = (a.x[i] - a.center) * a.scale + a.shift;
}

}  // namespace rlhf

namespace rlhf {

int64_t firstNonFiniteCpu(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return -1;
}

}  // namespace rlhf
