// The per-element formulas of the neural-network family, shared by the scalar reference, the CPU
// paths that have no vector form of their own (the gelus, AdamW) and the CUDA kernels, so that
// every backend computes an element with the same operations.
#pragma once
#include <cmath>
#include <cstdint>

#include "rlhf/host_device.h"
#include "rlhf/nn.h"

namespace rlhf {
namespace nn_math {

using std::erf;
using std::exp;
using std::sqrt;
using std::tanh;

constexpr double kSqrtHalf = 0.70710678118654752440;     // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1/sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;

// act(z), evaluated in float64 and rounded once.
RLHF_HOST_DEVICE inline float activate(Activation act, float z) {
  const double x = z;
  switch (act) {
    case Activation::Identity: return z;
    case Activation::Tanh: return static_cast<float>(tanh(x));
    case Activation::Relu: return z < 0 ? 0.0f : z;  // NaN passes through, as in PyTorch
    case Activation::Gelu: return static_cast<float>(0.5 * x * (1 + erf(x * kSqrtHalf)));
    case Activation::GeluTanh: return static_cast<float>(0.5 * x * (1 + tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x))));
  }
  return z;
}

// act'(z), from y = act(z) for tanh and relu, from z for the gelus.
RLHF_HOST_DEVICE inline float activationGrad(Activation act, float y, float z) {
  const double x = z;
  switch (act) {
    case Activation::Identity: return 1.0f;
    case Activation::Tanh: return 1.0f - y * y;  // in float32, as PyTorch's tanh_backward
    case Activation::Relu: return y > 0 ? 1.0f : 0.0f;
    case Activation::Gelu: return static_cast<float>(0.5 * (1 + erf(x * kSqrtHalf)) + x * kInvSqrt2Pi * exp(-0.5 * x * x));
    case Activation::GeluTanh: {
      const double t = tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
      return static_cast<float>(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kSqrt2OverPi * (1 + 3 * kGeluCubic * x * x));
    }
  }
  return 1.0f;
}

// The float32 scalars of one AdamW step, derived in float64 once (as PyTorch derives them in
// Python) so that every element and every backend uses the same ones.
struct AdamwStep {
  float decay, beta1Weight, beta2, oneMinusBeta2, stepSize, bias2Sqrt, eps;
};

inline AdamwStep adamwStep(const AdamwArgs& a) {
  const double t = static_cast<double>(a.step);
  AdamwStep s;
  s.decay = static_cast<float>(1 - a.lr * a.weightDecay);
  s.beta1Weight = static_cast<float>(1 - a.beta1);
  s.beta2 = static_cast<float>(a.beta2);
  s.oneMinusBeta2 = static_cast<float>(1 - a.beta2);
  s.stepSize = static_cast<float>(a.lr / (1 - std::pow(a.beta1, t)));
  s.bias2Sqrt = static_cast<float>(std::sqrt(1 - std::pow(a.beta2, t)));
  s.eps = static_cast<float>(a.eps);
  return s;
}

// One element in PyTorch's order: decay, m lerped towards g, v, then the step.
RLHF_HOST_DEVICE inline void adamwUpdate(const AdamwStep& s, float g, float& p, float& m, float& v) {
  p = p * s.decay;
  m = m + s.beta1Weight * (g - m);
  v = v * s.beta2 + s.oneMinusBeta2 * g * g;
  const float denom = sqrt(v) / s.bias2Sqrt + s.eps;
  p = p + -s.stepSize * (m / denom);
}

// --- rows of layer norm and mean pooling (one row per call: the CPU parallelises over rows) ---

RLHF_HOST_DEVICE inline void layerNormRow(const LayerNormArgs& a, int64_t r) {
  const float* x = a.x + r * a.cols;
  double sum = 0;
  for (int64_t j = 0; j < a.cols; ++j) sum += x[j];
  const double mean = a.cols > 0 ? sum / a.cols : 0;
  double sq = 0;
  for (int64_t j = 0; j < a.cols; ++j) sq += (x[j] - mean) * (x[j] - mean);
  const double rstd = 1 / sqrt((a.cols > 0 ? sq / a.cols : 0) + a.eps);
  a.mean[r] = static_cast<float>(mean);
  a.rstd[r] = static_cast<float>(rstd);
  for (int64_t j = 0; j < a.cols; ++j) {
    const double xhat = (x[j] - mean) * rstd;
    a.y[r * a.cols + j] = static_cast<float>(xhat * (a.gamma ? a.gamma[j] : 1.0) + (a.beta ? a.beta[j] : 0.0));
  }
}

// With xhat = (x - mean) rstd and g = gradY gamma: gradX = rstd (g - mean_j(g) - xhat mean_j(g xhat)),
// from the stored float32 mean and rstd.
RLHF_HOST_DEVICE inline void layerNormBackwardRow(const LayerNormBackwardArgs& a, int64_t r) {
  const float* x = a.x + r * a.cols;
  const float* gy = a.gradY + r * a.cols;
  const double mean = a.mean[r], rstd = a.rstd[r];
  double sumG = 0, sumGx = 0;
  for (int64_t j = 0; j < a.cols; ++j) {
    const double g = static_cast<double>(gy[j]) * (a.gamma ? a.gamma[j] : 1.0);
    sumG += g;
    sumGx += g * (x[j] - mean) * rstd;
  }
  const double meanG = sumG / a.cols, meanGx = sumGx / a.cols;
  for (int64_t j = 0; j < a.cols; ++j) {
    const double xhat = (x[j] - mean) * rstd;
    const double g = static_cast<double>(gy[j]) * (a.gamma ? a.gamma[j] : 1.0);
    a.gradX[r * a.cols + j] = static_cast<float>(rstd * (g - meanG - xhat * meanGx));
  }
}

// gradGamma[j] += sum_r gradY xhat and gradBeta[j] += sum_r gradY for columns [c0, c1), rows in order.
RLHF_HOST_DEVICE inline void layerNormParamGrads(const LayerNormBackwardArgs& a, int64_t c0, int64_t c1) {
  for (int64_t j = c0; j < c1; ++j) {
    double gamma = 0, beta = 0;
    for (int64_t r = 0; r < a.rows; ++r) {
      const double gy = a.gradY[r * a.cols + j];
      gamma += gy * (a.x[r * a.cols + j] - static_cast<double>(a.mean[r])) * a.rstd[r];
      beta += gy;
    }
    if (a.gradGamma != nullptr) a.gradGamma[j] = static_cast<float>(a.gradGamma[j] + gamma);
    if (a.gradBeta != nullptr) a.gradBeta[j] = static_cast<float>(a.gradBeta[j] + beta);
  }
}

// Valid tokens of row b, at least 1 (a row with none pools to 0).
RLHF_HOST_DEVICE inline double poolCount(const uint8_t* mask, int64_t b, int64_t T) {
  if (mask == nullptr) return T > 0 ? static_cast<double>(T) : 1.0;
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t) n += mask[b * T + t] != 0;
  return n > 0 ? static_cast<double>(n) : 1.0;
}

RLHF_HOST_DEVICE inline void meanPoolRow(const MeanPoolArgs& a, int64_t b) {
  const double count = poolCount(a.mask, b, a.T);
  for (int64_t d = 0; d < a.D; ++d) {
    double s = 0;
    for (int64_t t = 0; t < a.T; ++t)
      if (a.mask == nullptr || a.mask[b * a.T + t]) s += a.x[(b * a.T + t) * a.D + d];
    a.out[b * a.D + d] = static_cast<float>(s / count);
  }
}

RLHF_HOST_DEVICE inline void meanPoolBackwardRow(const MeanPoolBackwardArgs& a, int64_t b) {
  const float inv = static_cast<float>(1.0 / poolCount(a.mask, b, a.T));
  for (int64_t t = 0; t < a.T; ++t) {
    const bool valid = a.mask == nullptr || a.mask[b * a.T + t];
    for (int64_t d = 0; d < a.D; ++d) a.gradX[(b * a.T + t) * a.D + d] = valid ? a.gradOut[b * a.D + d] * inv : 0.0f;
  }
}

// sum of x[i]^2 over [i0, i1), in float64, in index order.
RLHF_HOST_DEVICE inline double blockSumSquares(const float* x, int64_t i0, int64_t i1) {
  double s = 0;
  for (int64_t i = i0; i < i1; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace nn_math
}  // namespace rlhf
