// Scalar references for GAE, token GAE and discounted returns: the plainest loops that follow
// SEMANTICS.md §3 line by line. Every fast path is judged against these.
#include "rlhf/kernels.h"

namespace rlhf {

void gaeReference(const GaeArgs& a) {
  const int64_t T = a.T, N = a.N;
  for (int64_t n = 0; n < N; ++n) {
    float next = 0.0f;  // A_{t+1}
    for (int64_t t = T - 1; t >= 0; --t) {
      const bool last = t == T - 1;
      const int64_t i = t * N + n;
      const float nextValue = last ? a.nextValuesLast[n] : a.nextValues[i];
      const bool terminated =
          a.terminated != nullptr && (last ? a.terminatedLast[n] : a.terminated[i]) != 0;
      const bool truncated = a.truncated != nullptr && a.truncated[i] != 0;
      const float gamma = a.gammaArray != nullptr
                              ? a.gammaArray[t * a.gammaStrideT + n * a.gammaStrideN]
                              : a.gammaValue;
      const float lambda = a.lambdaArray != nullptr
                               ? a.lambdaArray[t * a.lambdaStrideT + n * a.lambdaStrideN]
                               : a.lambdaValue;
      const float notTerminated = terminated ? 0.0f : 1.0f;
      const float carry = (terminated || truncated) ? 0.0f : 1.0f;
      const float delta = a.rewards[i] + gamma * notTerminated * nextValue - a.values[i];
      next = delta + gamma * lambda * carry * next;
      a.advantages[i] = next;
      a.returns[i] = next + a.values[i];
    }
  }
}

void tokenGaeReference(const TokenGaeArgs& a) {
  const int64_t B = a.B, T = a.T;
  for (int64_t b = 0; b < B; ++b) {
    const float* r = a.rewards + b * T;
    const float* v = a.values + b * T;
    const uint8_t* m = a.mask != nullptr ? a.mask + b * T : nullptr;
    float* adv = a.advantages + b * T;
    float* ret = a.returns + b * T;
    float nextValue = a.lastValues != nullptr ? a.lastValues[b] : 0.0f;
    float nextAdv = 0.0f;
    for (int64_t t = T - 1; t >= 0; --t) {
      const bool valid = m == nullptr || m[t] != 0;
      switch (a.maskMode) {
        case MaskMode::Premask: {
          const float rt = valid ? r[t] : 0.0f;
          const float vt = valid ? v[t] : 0.0f;
          nextAdv = rt + a.gamma * nextValue - vt + a.gamma * a.lambda * nextAdv;
          nextValue = vt;
          adv[t] = nextAdv;
          ret[t] = nextAdv + vt;
          break;
        }
        case MaskMode::Skip: {
          if (valid) {
            nextAdv = r[t] + a.gamma * nextValue - v[t] + a.gamma * a.lambda * nextAdv;
            nextValue = v[t];
          }
          adv[t] = nextAdv;
          ret[t] = nextAdv + v[t];
          break;
        }
        case MaskMode::None: {
          nextAdv = r[t] + a.gamma * nextValue - v[t] + a.gamma * a.lambda * nextAdv;
          nextValue = v[t];
          adv[t] = nextAdv;
          ret[t] = nextAdv + v[t];
          break;
        }
      }
    }
  }
}

void discountedReturnsReference(const DiscountedReturnsArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    float next = 0.0f;
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const int64_t i = b * a.T + t;
      const float r = (a.mask == nullptr || a.mask[i] != 0) ? a.rewards[i] : 0.0f;
      next = r + a.gamma * next;
      a.returns[i] = next;
    }
  }
}

}  // namespace rlhf
