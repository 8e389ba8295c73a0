// Scalar references of the neural-network family (nn.h): the definitions the fast paths are
// tested against. Plain loops, float64 where a sum is formed.
#include <algorithm>
#include <cmath>

#include "nn_math.h"
#include "rlhf/nn.h"

namespace rlhf {

using namespace nn_math;

static double opA(const MatmulArgs& a, int64_t i, int64_t k) {
  return a.transA ? a.a[k * a.lda + i] : a.a[i * a.lda + k];
}
static double opB(const MatmulArgs& a, int64_t k, int64_t j) {
  return a.transB ? a.b[j * a.ldb + k] : a.b[k * a.ldb + j];
}

void matmulReference(const MatmulArgs& a) {
  for (int64_t i = 0; i < a.M; ++i)
    for (int64_t j = 0; j < a.N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < a.K; ++k) s += opA(a, i, k) * opB(a, k, j);
      float& c = a.c[i * a.ldc + j];
      c = a.accumulate ? static_cast<float>(c + s) : static_cast<float>(s);
      if (!a.hasEpilogue()) continue;
      const float z = a.bias != nullptr ? c + a.bias[j] : c;
      if (a.z != nullptr) a.z[i * a.ldc + j] = z;
      c = activate(a.act, z);
    }
}

void biasActReference(const BiasActArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t j = 0; j < a.cols; ++j) {
      const int64_t i = r * a.cols + j;
      const float z = a.bias != nullptr ? a.x[i] + a.bias[j] : a.x[i];
      if (a.z != nullptr) a.z[i] = z;
      a.y[i] = activate(a.act, z);
    }
}

void biasActBackwardReference(const BiasActBackwardArgs& a) {
  for (int64_t j = 0; j < a.cols; ++j) {
    double column = 0;
    for (int64_t r = 0; r < a.rows; ++r) {
      const int64_t i = r * a.cols + j;
      const float g = a.gradY[i] * activationGrad(a.act, a.y != nullptr ? a.y[i] : 0.0f, a.z != nullptr ? a.z[i] : 0.0f);
      a.gradX[i] = g;
      column += g;
    }
    if (a.gradBias != nullptr) a.gradBias[j] = static_cast<float>(a.gradBias[j] + column);
  }
}

void denseBackwardReference(const DenseBackwardArgs& a) {
  biasActBackwardReference(activationGradStep(a));
  matmulReference(weightGradStep(a));
  if (a.gradX != nullptr) matmulReference(inputGradStep(a));
}

void embeddingReference(const EmbeddingArgs& a) {
  for (int64_t i = 0; i < a.n; ++i)
    for (int64_t d = 0; d < a.dim; ++d) a.out[i * a.dim + d] = a.table[static_cast<int64_t>(a.ids[i]) * a.dim + d];
}

void embeddingBackwardReference(const EmbeddingBackwardArgs& a) {
  for (int64_t i = 0; i < a.n; ++i)
    for (int64_t d = 0; d < a.dim; ++d) a.gradTable[static_cast<int64_t>(a.ids[i]) * a.dim + d] += a.gradOut[i * a.dim + d];
}

void layerNormReference(const LayerNormArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) layerNormRow(a, r);
}

void layerNormBackwardReference(const LayerNormBackwardArgs& a) {
  for (int64_t r = 0; r < a.rows; ++r) layerNormBackwardRow(a, r);
  layerNormParamGrads(a, 0, a.cols);
}

void meanPoolReference(const MeanPoolArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) meanPoolRow(a, b);
}

void meanPoolBackwardReference(const MeanPoolBackwardArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) meanPoolBackwardRow(a, b);
}

void adamwReference(const AdamwArgs& a) {
  const AdamwStep s = adamwStep(a);
  for (int64_t t = 0; t < a.tensors.count; ++t)
    for (int64_t i = 0; i < a.tensors.sizes[t]; ++i)
      adamwUpdate(s, a.tensors.grads[t][i], a.tensors.params[t][i], a.tensors.m[t][i], a.tensors.v[t][i]);
}

double sumSquaresReference(const SumSquaresArgs& a) {
  double total = 0;
  for (int64_t t = 0; t < a.tensors.count; ++t)
    for (int64_t b = 0; b < a.tensors.sizes[t]; b += kNormBlock) total += blockSumSquares(a.tensors.grads[t], b, std::min(a.tensors.sizes[t], b + kNormBlock));
  return total;
}

void scaleReference(const ScaleArgs& a) {
  for (int64_t t = 0; t < a.tensors.count; ++t)
    for (int64_t i = 0; i < a.tensors.sizes[t]; ++i) a.tensors.grads[t][i] *= a.factor;
}

}  // namespace rlhf
