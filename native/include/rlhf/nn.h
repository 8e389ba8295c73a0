// The neural-network kernel family: what the models of rl.nn (lib/nn) run forward and backward,
// and the optimizer. Conventions as in kernels.h: one argument struct per op shared by
// `<op>Reference` (scalar C++, the ground truth), `<op>Cpu` and `cuda::<op>` (device pointers);
// shapes are row-major float32. A gradient output marked "accumulates" is added to (+=), so that
// one parameter used twice, or several minibatches, sum their gradients as in PyTorch.
#pragma once
#include <cstdint>

namespace rlhf {

// Identity, tanh, relu (max(z, 0), gradient 0 at 0 as in PyTorch), gelu (exact: z Phi(z), with
// erf, PyTorch's default) and gelu with the tanh approximation (approximate='tanh').
enum class Activation : int32_t { Identity = 0, Tanh = 1, Relu = 2, Gelu = 3, GeluTanh = 4 };

// --- matrix multiply ----------------------------------------------------------------------------
// C[M,N] (+)= op(A) op(B), op(A) [M,K], op(B) [K,N]. op(X) is X, or X transposed when transX:
// A is stored [M,K] (row pitch lda >= K), or [K,M] when transA (lda >= M); B likewise [K,N] or
// [N,K]. Every C element is one dot product over k = 0..K-1 in a fixed order of partial sums that
// depends on K only, never on the thread count or on M and N: the result is deterministic.
// The reference sums in float64 and rounds once; the fast paths sum float32 products (FMA), so
// they agree with it to about K * 2^-24 relative to sum_k |a_ik b_kj|.
struct MatmulArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  bool transA = false;
  const float* b = nullptr;
  int64_t ldb = 0;
  bool transB = false;
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;  // C += op(A) op(B) instead of C = op(A) op(B)
  // A dense layer's forward in the same pass, when bias, z or an activation is set: with P what C
  // would hold without them, C = act(P + bias[j]) and z (pitch ldc) = P + bias[j]. The bits are
  // those of biasAct run over C afterwards, on each path.
  const float* bias = nullptr;
  Activation act = Activation::Identity;
  float* z = nullptr;
  bool hasEpilogue() const { return bias != nullptr || z != nullptr || act != Activation::Identity; }
};

// --- bias and activation ------------------------------------------------------------------------
// y = act(x + bias) over [rows, cols]; bias [cols] or null. `y` may be `x` (in place). When
// `z` is set the pre-activation x + bias is also stored there (the gelus' backward needs it).
struct BiasActArgs {
  int64_t rows = 0, cols = 0;
  const float* x = nullptr;
  const float* bias = nullptr;
  Activation act = Activation::Identity;
  float* y = nullptr;
  float* z = nullptr;
};

// gradX = gradY * act'(z) over [rows, cols] (gradX may be gradY), and gradBias[cols] (accumulates,
// when set) += the column sums of gradX, summed in row order. act' is computed from y for tanh
// (1 - y^2) and relu (y > 0), from z for the gelus; the one it needs must be set.
struct BiasActBackwardArgs {
  int64_t rows = 0, cols = 0;
  const float* gradY = nullptr;
  const float* y = nullptr;
  const float* z = nullptr;
  Activation act = Activation::Identity;
  float* gradX = nullptr;
  float* gradBias = nullptr;
};

// --- a dense layer's backward ------------------------------------------------------------------
// The backward of y = act(x w^T + b) (x [rows, in], w [out, in]) in one call, for the layers of
// rl.nn: the three steps below in this order, each with the bits of its own op on each path.
//   gradZ = gradY * act'            biasActBackward (gradZ may be gradY; gradBias accumulates)
//   gradW += gradZ^T x              matmul [out, in], accumulates
//   gradX (+)= gradZ w              matmul [rows, in], when gradX is set; added with accumulateGradX
// The CPU runs the two products side by side on two threads when they are small and gradX
// overlaps none of the others' operands (the bits do not depend on threads, see matmul).
struct DenseBackwardArgs {
  int64_t rows = 0, in = 0, out = 0;
  const float* x = nullptr;
  const float* w = nullptr;
  const float* y = nullptr;
  const float* z = nullptr;
  Activation act = Activation::Identity;
  const float* gradY = nullptr;
  float* gradZ = nullptr;
  float* gradW = nullptr;
  float* gradBias = nullptr;
  float* gradX = nullptr;
  bool accumulateGradX = false;
};

// The three steps of a DenseBackwardArgs as the args of their own ops, shared by every path.
inline BiasActBackwardArgs activationGradStep(const DenseBackwardArgs& a) {
  return BiasActBackwardArgs{a.rows, a.out, a.gradY, a.y, a.z, a.act, a.gradZ, a.gradBias};
}
// MatmulArgs{M, N, K, a, lda, transA, b, ldb, transB, c, ldc, accumulate}
inline MatmulArgs weightGradStep(const DenseBackwardArgs& a) {  // [out, in] += gradZ^T x
  return MatmulArgs{a.out, a.in, a.rows, a.gradZ, a.out, true, a.x, a.in, false, a.gradW, a.in, true};
}
inline MatmulArgs inputGradStep(const DenseBackwardArgs& a) {  // [rows, in] (+)= gradZ w
  return MatmulArgs{a.rows, a.in, a.out, a.gradZ, a.out, false, a.w, a.in, false, a.gradX, a.in, a.accumulateGradX};
}

// --- embedding ----------------------------------------------------------------------------------
// out[i, :] = table[ids[i], :] for i < n; table [vocab, dim]. Ids are checked by the caller.
struct EmbeddingArgs {
  int64_t n = 0, dim = 0, vocab = 0;
  const int32_t* ids = nullptr;
  const float* table = nullptr;
  float* out = nullptr;
};

// gradTable[ids[i], :] += gradOut[i, :] (accumulates), added in the order i = 0..n-1 for every
// row of the table, so that repeated ids sum deterministically.
struct EmbeddingBackwardArgs {
  int64_t n = 0, dim = 0, vocab = 0;
  const int32_t* ids = nullptr;
  const float* gradOut = nullptr;
  float* gradTable = nullptr;
};

// --- layer norm ---------------------------------------------------------------------------------
// Over the last dimension of x [rows, cols]: y = (x - mean) * rstd * gamma + beta with
// rstd = 1/sqrt(var + eps), var the biased variance (PyTorch's LayerNorm). gamma, beta [cols] or
// null (1 and 0). mean and rstd [rows] are stored for the backward. Statistics in float64.
struct LayerNormArgs {
  int64_t rows = 0, cols = 0;
  const float* x = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
  float* y = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
};

// gradX (written), gradGamma and gradBeta ([cols] or null; accumulate, column sums in row order).
struct LayerNormBackwardArgs {
  int64_t rows = 0, cols = 0;
  const float* x = nullptr;
  const float* gamma = nullptr;
  const float* mean = nullptr;
  const float* rstd = nullptr;
  const float* gradY = nullptr;
  float* gradX = nullptr;
  float* gradGamma = nullptr;
  float* gradBeta = nullptr;
};

// --- mean pooling over a mask -------------------------------------------------------------------
// out[b, :] = sum_t m[b,t] x[b,t,:] / max(1, sum_t m[b,t]) for x [B,T,D], mask [B,T] (null: all
// valid); a row with no valid token pools to 0. Sums in float64 in t order.
struct MeanPoolArgs {
  int64_t B = 0, T = 0, D = 0;
  const float* x = nullptr;
  const uint8_t* mask = nullptr;
  float* out = nullptr;
};

// gradX[b,t,:] = m[b,t] gradOut[b,:] / max(1, count_b) (written).
struct MeanPoolBackwardArgs {
  int64_t B = 0, T = 0, D = 0;
  const float* gradOut = nullptr;
  const uint8_t* mask = nullptr;
  float* gradX = nullptr;
};

// --- optimizer ----------------------------------------------------------------------------------
// Lists of `count` parameter tensors: tensor i has sizes[i] elements at params[i], with its
// gradient and Adam moments at the same index of grads, m and v.
struct TensorList {
  int64_t count = 0;
  const int64_t* sizes = nullptr;
  float* const* params = nullptr;
  float* const* grads = nullptr;
  float* const* m = nullptr;
  float* const* v = nullptr;
};

// One AdamW step (Loshchilov & Hutter), as PyTorch's torch.optim.AdamW (foreach=False) computes it
// in float32, in its order: with step t >= 1,
//   p *= 1 - lr*weightDecay
//   m += (1-beta1)*(g - m) ;  v = beta2*v + (1-beta2)*g*g
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The scalars are taken in float64 (JS numbers, Python floats) and each derived one is rounded
// to float32 once per step (nn_math.h).
struct AdamwArgs {
  TensorList tensors;
  int64_t step = 1;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 1e-2;
};

// The sum of squares of every gradient element, in float64 over fixed blocks of kNormBlock
// elements per tensor added in order (the global norm of clipGradNorm is its square root).
constexpr int64_t kNormBlock = 8192;
struct SumSquaresArgs {
  TensorList tensors;  // only sizes and grads are read
};

// grads[i] *= factor for every tensor of the list (clipGradNorm's rescale).
struct ScaleArgs {
  TensorList tensors;  // only sizes and grads are read
  float factor = 1.0f;
};

void matmulReference(const MatmulArgs& a);
void biasActReference(const BiasActArgs& a);
void biasActBackwardReference(const BiasActBackwardArgs& a);
void denseBackwardReference(const DenseBackwardArgs& a);
void embeddingReference(const EmbeddingArgs& a);
void embeddingBackwardReference(const EmbeddingBackwardArgs& a);
void layerNormReference(const LayerNormArgs& a);
void layerNormBackwardReference(const LayerNormBackwardArgs& a);
void meanPoolReference(const MeanPoolArgs& a);
void meanPoolBackwardReference(const MeanPoolBackwardArgs& a);
void adamwReference(const AdamwArgs& a);
double sumSquaresReference(const SumSquaresArgs& a);
void scaleReference(const ScaleArgs& a);

void matmulCpu(const MatmulArgs& a);
void biasActCpu(const BiasActArgs& a);
void biasActBackwardCpu(const BiasActBackwardArgs& a);
void denseBackwardCpu(const DenseBackwardArgs& a);
void embeddingCpu(const EmbeddingArgs& a);
void embeddingBackwardCpu(const EmbeddingBackwardArgs& a);
void layerNormCpu(const LayerNormArgs& a);
void layerNormBackwardCpu(const LayerNormBackwardArgs& a);
void meanPoolCpu(const MeanPoolArgs& a);
void meanPoolBackwardCpu(const MeanPoolBackwardArgs& a);
void adamwCpu(const AdamwArgs& a);
double sumSquaresCpu(const SumSquaresArgs& a);
void scaleCpu(const ScaleArgs& a);

}  // namespace rlhf
