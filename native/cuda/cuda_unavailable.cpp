// The CUDA interface (rlhf/cuda.h) of a build without CUDA: it reports no devices, and every
// call that would need one throws a CudaUnavailable KernelError that says how to get CUDA.
#include "rlhf/cuda.h"
#include "rlhf/error.h"

namespace rlhf {
namespace cuda {

namespace {

[[noreturn]] void unavailable() {
  throw KernelError(ErrorKind::CudaUnavailable,
                    "rlhf-node was built without CUDA; rebuild with RLHF_CUDA=1 npm run "
                    "build:native on a machine with nvcc");
}

}  // namespace

bool compiled() { return false; }
int deviceCount() { return 0; }
std::string architectures() { return ""; }
std::string runtimeVersion() { return ""; }
std::string driverVersion() { return ""; }
MemoryStats memoryStats(int) { return MemoryStats{}; }

DeviceInfo deviceInfo(int) { unavailable(); }
void* alloc(size_t, int) { unavailable(); }
void free(void*, int) { unavailable(); }
void copyToDevice(void*, const void*, size_t, int) { unavailable(); }
void copyToHost(void*, const void*, size_t, int) { unavailable(); }
void copyOnDevice(void*, const void*, size_t, int) { unavailable(); }
void synchronize(int) { unavailable(); }
void gae(const GaeArgs&, int) { unavailable(); }
void tokenGae(const TokenGaeArgs&, int) { unavailable(); }
void discountedReturns(const DiscountedReturnsArgs&, int) { unavailable(); }
MaskedMoments maskedMoments(const MaskedMomentsArgs&, int) { unavailable(); }
void affine(const AffineArgs&, int) { unavailable(); }
int64_t firstNonFinite(const float*, int64_t, int) { unavailable(); }
void logprobs(const LogprobsArgs&, int) { unavailable(); }
void logprobsBackward(const LogprobsBackwardArgs&, int) { unavailable(); }
int64_t firstInvalidLabel(const int32_t*, int64_t, int64_t, int32_t, int) { unavailable(); }
void klPenalty(const KlPenaltyArgs&, int) { unavailable(); }
void shapeRewards(const ShapeRewardsArgs&, int) { unavailable(); }
PolicyLossStats policyLoss(const PolicyLossArgs&, int) { unavailable(); }
ValueLossStats valueLoss(const ValueLossArgs&, int) { unavailable(); }
ActorLossStats actorLoss(const ActorLossArgs&, int) { unavailable(); }
PairwiseLossStats pairwiseLoss(const PairwiseLossArgs&, int) { unavailable(); }
DpoLossStats dpoLoss(const DpoLossArgs&, int) { unavailable(); }
void sequenceLogprobs(const SequenceLogprobsArgs&, int) { unavailable(); }
void sequenceLogprobsBackward(const SequenceLogprobsBackwardArgs&, int) { unavailable(); }
void groupAdvantages(const GroupAdvantagesArgs&, int) { unavailable(); }
void matmul(const MatmulArgs&, int) { unavailable(); }
void biasAct(const BiasActArgs&, int) { unavailable(); }
void biasActBackward(const BiasActBackwardArgs&, int) { unavailable(); }
void denseBackward(const DenseBackwardArgs&, int) { unavailable(); }
void embedding(const EmbeddingArgs&, int) { unavailable(); }
void embeddingBackward(const EmbeddingBackwardArgs&, int) { unavailable(); }
void layerNorm(const LayerNormArgs&, int) { unavailable(); }
void layerNormBackward(const LayerNormBackwardArgs&, int) { unavailable(); }
void meanPool(const MeanPoolArgs&, int) { unavailable(); }
void meanPoolBackward(const MeanPoolBackwardArgs&, int) { unavailable(); }
void adamw(const AdamwArgs&, int) { unavailable(); }
double sumSquares(const SumSquaresArgs&, int) { unavailable(); }
void scale(const ScaleArgs&, int) { unavailable(); }

}  // namespace cuda
}  // namespace rlhf
