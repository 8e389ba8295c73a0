// Node-API entry points of the ops (ops.cpp) and of the runtime (runtime.cpp).
#pragma once
#include <napi.h>

namespace rlhf {
namespace addon {

Napi::Value gae(const Napi::CallbackInfo& info);
Napi::Value tokenGae(const Napi::CallbackInfo& info);
Napi::Value discountedReturns(const Napi::CallbackInfo& info);
Napi::Value maskedMean(const Napi::CallbackInfo& info);
Napi::Value maskedVar(const Napi::CallbackInfo& info);
Napi::Value maskedWhiten(const Napi::CallbackInfo& info);
Napi::Value firstNonFinite(const Napi::CallbackInfo& info);

Napi::Value logprobsFromLogits(const Napi::CallbackInfo& info);
Napi::Value logprobsFromLogitsBackward(const Napi::CallbackInfo& info);
Napi::Value klPenalty(const Napi::CallbackInfo& info);
Napi::Value shapeRewards(const Napi::CallbackInfo& info);
Napi::Value ppoPolicyLoss(const Napi::CallbackInfo& info);
Napi::Value valueLoss(const Napi::CallbackInfo& info);
Napi::Value actorLossFromLogits(const Napi::CallbackInfo& info);

Napi::Value pairwiseRewardLoss(const Napi::CallbackInfo& info);
Napi::Value dpoLoss(const Napi::CallbackInfo& info);
Napi::Value sequenceLogprobs(const Napi::CallbackInfo& info);
Napi::Value sequenceLogprobsBackward(const Napi::CallbackInfo& info);
Napi::Value groupAdvantages(const Napi::CallbackInfo& info);

Napi::Value matmul(const Napi::CallbackInfo& info);
Napi::Value biasAct(const Napi::CallbackInfo& info);
Napi::Value biasActBackward(const Napi::CallbackInfo& info);
Napi::Value denseBackward(const Napi::CallbackInfo& info);
Napi::Value embedding(const Napi::CallbackInfo& info);
Napi::Value embeddingBackward(const Napi::CallbackInfo& info);
Napi::Value layerNorm(const Napi::CallbackInfo& info);
Napi::Value layerNormBackward(const Napi::CallbackInfo& info);
Napi::Value meanPool(const Napi::CallbackInfo& info);
Napi::Value meanPoolBackward(const Napi::CallbackInfo& info);
Napi::Value adamw(const Napi::CallbackInfo& info);
Napi::Value sumSquares(const Napi::CallbackInfo& info);
Napi::Value scaleGrads(const Napi::CallbackInfo& info);

Napi::Value buildInfo(const Napi::CallbackInfo& info);
Napi::Value backends(const Napi::CallbackInfo& info);
Napi::Value setNumThreads(const Napi::CallbackInfo& info);
Napi::Value getNumThreads(const Napi::CallbackInfo& info);
Napi::Value memoryStats(const Napi::CallbackInfo& info);
Napi::Value synchronize(const Napi::CallbackInfo& info);
Napi::Value opTable(const Napi::CallbackInfo& info);
Napi::Value measureBandwidth(const Napi::CallbackInfo& info);
Napi::Value triadSeconds(const Napi::CallbackInfo& info);
Napi::Value readSeconds(const Napi::CallbackInfo& info);
Napi::Value memoryTriadElements(const Napi::CallbackInfo& info);
Napi::Value setCpuPath(const Napi::CallbackInfo& info);
Napi::Value setReadStreams(const Napi::CallbackInfo& info);
Napi::Value placeShift(const Napi::CallbackInfo& info);
Napi::Value placeInPage(const Napi::CallbackInfo& info);
Napi::Value adviseHugePages(const Napi::CallbackInfo& info);
Napi::Value hugePagesRequested(const Napi::CallbackInfo& info);

}  // namespace addon
}  // namespace rlhf
