// The CUDA backend: device memory, one stream per device, and the kernel launchers. Kernel
// arguments are the structs of kernels.h holding device pointers. When the addon was built
// without CUDA (native/cuda/cuda_unavailable.cpp) `compiled()` is false, `deviceCount()` is 0
// and everything else throws a CudaUnavailable KernelError. With CUDA compiled in but no driver
// or no GPU, `deviceCount()` is 0 too: nothing here ever aborts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "rlhf/kernels.h"
#include "rlhf/nn.h"
#include "rlhf/policy.h"
#include "rlhf/preference.h"

namespace rlhf {
namespace cuda {

bool compiled();
int deviceCount();
std::string architectures();    // e.g. "sm_80;sm_90", as compiled; "" without CUDA
std::string runtimeVersion();   // e.g. "13.0"; "" without CUDA
std::string driverVersion();    // "" when there is no driver

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  size_t totalMemory = 0;
  double peakBandwidthGBs = 0;  // from the memory clock and bus width
};
DeviceInfo deviceInfo(int device);

// Allocation counters kept by this backend's allocator (not the driver's view).
struct MemoryStats {
  int64_t liveAllocations = 0, liveBytes = 0, peakBytes = 0, totalAllocations = 0;
};
MemoryStats memoryStats(int device);

void* alloc(size_t bytes, int device);  // bytes may be 0 (returns a unique non-null pointer)
void free(void* ptr, int device);
// Copies wait for the device's stream, so they see every kernel launched before them.
void copyToDevice(void* dst, const void* src, size_t bytes, int device);
void copyToHost(void* dst, const void* src, size_t bytes, int device);
void copyOnDevice(void* dst, const void* src, size_t bytes, int device);
void synchronize(int device);

// Launchers: enqueue on the device's stream and return; launch errors are thrown as Cuda
// KernelErrors. Pointers in the argument structs are device pointers; gammaValue/lambdaValue
// are host scalars as on the CPU.
void gae(const GaeArgs& a, int device);
void tokenGae(const TokenGaeArgs& a, int device);
void discountedReturns(const DiscountedReturnsArgs& a, int device);
MaskedMoments maskedMoments(const MaskedMomentsArgs& a, int device);  // waits for the result
void affine(const AffineArgs& a, int device);
// Index of the first element of x[0..n) that is NaN or infinite, or -1; waits for the result.
int64_t firstNonFinite(const float* x, int64_t n, int device);

// The policy-gradient family (policy.h). The losses wait for their scalar results; their
// reductions are fixed-shape trees, so repeated runs give the same bits.
void logprobs(const LogprobsArgs& a, int device);
void logprobsBackward(const LogprobsBackwardArgs& a, int device);
// Index of the first label neither in [0, V) nor ignoreIndex, or -1; waits for the result.
int64_t firstInvalidLabel(const int32_t* labels, int64_t n, int64_t V, int32_t ignoreIndex, int device);
void klPenalty(const KlPenaltyArgs& a, int device);
void shapeRewards(const ShapeRewardsArgs& a, int device);
PolicyLossStats policyLoss(const PolicyLossArgs& a, int device);
ValueLossStats valueLoss(const ValueLossArgs& a, int device);
ActorLossStats actorLoss(const ActorLossArgs& a, int device);

// The preference family (preference.h). The losses wait for their scalar results; their sums
// are fixed-shape trees, so repeated runs give the same bits. groupAdvantages with groupIds
// computes on the host (a copy each way) and waits.
PairwiseLossStats pairwiseLoss(const PairwiseLossArgs& a, int device);
DpoLossStats dpoLoss(const DpoLossArgs& a, int device);
void sequenceLogprobs(const SequenceLogprobsArgs& a, int device);
void sequenceLogprobsBackward(const SequenceLogprobsBackwardArgs& a, int device);
void groupAdvantages(const GroupAdvantagesArgs& a, int device);

// The neural-network family (nn.h). The matrix multiply is a tiled kernel of our own (the build
// never needs cuBLAS). A TensorList's pointer and size arrays are host memory (the launchers copy
// them to the device); the tensors they point to are device memory. sumSquares waits for its
// result and sums in a fixed order, so repeated runs give the same bits.
void matmul(const MatmulArgs& a, int device);
void biasAct(const BiasActArgs& a, int device);
void biasActBackward(const BiasActBackwardArgs& a, int device);
void denseBackward(const DenseBackwardArgs& a, int device);
void embedding(const EmbeddingArgs& a, int device);
void embeddingBackward(const EmbeddingBackwardArgs& a, int device);
void layerNorm(const LayerNormArgs& a, int device);
void layerNormBackward(const LayerNormBackwardArgs& a, int device);
void meanPool(const MeanPoolArgs& a, int device);
void meanPoolBackward(const MeanPoolBackwardArgs& a, int device);
void adamw(const AdamwArgs& a, int device);
double sumSquares(const SumSquaresArgs& a, int device);
void scale(const ScaleArgs& a, int device);

}  // namespace cuda
}  // namespace rlhf
