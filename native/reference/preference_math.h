// The scalar functions of the preference family in float64, stable for arguments of any size:
// shared by the scalar reference, the per-pair code of the CPU kernels and the CUDA kernels
// (native/cuda/preference.cu), so that every backend computes a pair with the same operations.
// Unqualified math functions and `x != x` for NaN, so that the same code compiles for the device.
#pragma once
#include <cmath>
#include <cstdint>

#include "rlhf/host_device.h"
#include "rlhf/preference.h"

namespace rlhf {
namespace preference_math {

using std::exp;
using std::fabs;
using std::fmax;
using std::log;
using std::log1p;

// log(1 + exp(z)) without overflow or the loss of digits log(1 + tiny) would cost.
RLHF_HOST_DEVICE inline double softplus(double z) { return fmax(z, 0.0) + log1p(exp(-fabs(z))); }
RLHF_HOST_DEVICE inline double logsigmoid(double z) { return -softplus(-z); }
RLHF_HOST_DEVICE inline double sigmoid(double z) {
  if (z >= 0) return 1 / (1 + exp(-z));
  const double e = exp(z);
  return e / (1 + e);
}

// One pair of the DPO family: its loss and the derivatives with respect to x = policyChosen -
// refChosen and y = policyRejected - refRejected (formulas as TRL's DPO trainer; the length-
// normalising types divide by the lengths nc, nr). `delta` is bco_pair's batch mean reward.
struct DpoPair {
  double l, dldx, dldy;
};

// The types whose loss depends on z = beta (x - y) alone: dl/dy = -dl/dx.
RLHF_HOST_DEVICE inline DpoPair symmetric(double l, double dldx) { return DpoPair{l, dldx, -dldx}; }

RLHF_HOST_DEVICE inline DpoPair dpoPair(DpoLossType type, double x, double y, double nc, double nr, double beta,
                                        double eps, double tau, double delta) {
  const double b = beta, z = beta * (x - y);
  switch (type) {
    case DpoLossType::Sigmoid:
      return symmetric(-(1 - eps) * logsigmoid(z) - eps * logsigmoid(-z), b * (sigmoid(z) - (1 - eps)));
    case DpoLossType::Robust:
      return symmetric((-(1 - eps) * logsigmoid(z) + eps * logsigmoid(-z)) / (1 - 2 * eps),
                       b * (sigmoid(z) - (1 - eps) / (1 - 2 * eps)));
    case DpoLossType::Hinge:
      return symmetric(fmax(0.0, 1 - z), z < 1 ? -b : (z != z ? z : 0.0));
    case DpoLossType::Ipo: {
      const bool normalised = nc > 0;
      const double g = normalised ? x / nc - y / nr : x - y;
      const double d = 2 * (g - 1 / (2 * b));
      return {(g - 1 / (2 * b)) * (g - 1 / (2 * b)), normalised ? d / nc : d, normalised ? -d / nr : -d};
    }
    case DpoLossType::SigmoidNorm: {
      const double w = b * (x / nc - y / nr);
      return {-logsigmoid(w), -b * sigmoid(-w) / nc, b * sigmoid(-w) / nr};
    }
    case DpoLossType::ExoPair: {
      const double l = sigmoid(z) * (logsigmoid(z) - log(1 - eps)) + sigmoid(-z) * (logsigmoid(-z) - log(eps));
      return symmetric(l, b * sigmoid(z) * sigmoid(-z) * (z - log((1 - eps) / eps)));
    }
    case DpoLossType::NcaPair: {
      const double u = b * x, v = b * y;
      return {-logsigmoid(u) - 0.5 * logsigmoid(-u) - 0.5 * logsigmoid(-v), b * (1.5 * sigmoid(u) - 1),
              0.5 * b * sigmoid(v)};
    }
    case DpoLossType::BcoPair: {
      const double u = b * x - delta, v = b * y - delta;
      return {-logsigmoid(u) - logsigmoid(-v), -b * sigmoid(-u), b * sigmoid(v)};
    }
    case DpoLossType::SppoHard:
      return {(x - 0.5 / b) * (x - 0.5 / b) + (y + 0.5 / b) * (y + 0.5 / b), 2 * (x - 0.5 / b), 2 * (y + 0.5 / b)};
    case DpoLossType::ApoZero: {
      const double u = b * x, v = b * y;
      return {1 - sigmoid(u) + sigmoid(v), -b * sigmoid(u) * sigmoid(-u), b * sigmoid(v) * sigmoid(-v)};
    }
    case DpoLossType::ApoDown: {
      const double u = b * x;
      const double sz = sigmoid(z) * sigmoid(-z);
      return {sigmoid(u) + 1 - sigmoid(z), b * sigmoid(u) * sigmoid(-u) - b * sz, b * sz};
    }
    case DpoLossType::Discopop: {
      // exp(-z) * m written as exp(-z + logsig(z/tau)): the true limit 0, not inf * 0, for very negative z.
      const double m = sigmoid(z / tau);
      const double expM = exp(-z + logsigmoid(z / tau));
      const double l = -logsigmoid(z) * (1 - m) + expM;
      const double expMM = exp(-z + logsigmoid(z / tau) + logsigmoid(-z / tau));
      const double dldz = -sigmoid(-z) * (1 - m) - expM + (logsigmoid(z) * m * (1 - m) + expMM) / tau;
      return symmetric(l, b * dldz);
    }
  }
  return {NAN, NAN, NAN};
}

// bco_pair's reference point: the mean of the batch's 2N implicit rewards beta*x and beta*y,
// held fixed (detached) in the gradient, as TRL's running mean after this batch's first update.
inline double bcoDelta(const DpoLossArgs& a) {
  double sum = 0;
  for (int64_t i = 0; i < a.N; ++i)
    sum += (static_cast<double>(a.policyChosen[i]) - a.refChosen[i]) + (static_cast<double>(a.policyRejected[i]) - a.refRejected[i]);
  return a.N > 0 ? static_cast<double>(a.beta) * sum / (2.0 * static_cast<double>(a.N)) : 0.0;
}

}  // namespace preference_math
}  // namespace rlhf
