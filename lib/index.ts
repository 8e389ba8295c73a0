// rlhf-node: RLHF math at native speed. The package root: tensors, runtime, ops.
export { Tensor, tensor } from './tensor';
export type { Dtype, DeviceSpec, TensorOptions, TypedArray } from './tensor';
export { RlhfError } from './errors';
export type { ErrorCode } from './errors';
export { backends, buildInfo, getNumThreads, memoryStats, opTable, setNumThreads } from './runtime';
export type { Backends, BuildInfo, MemoryStats, OpRow } from './runtime';
export {
  discountedReturns, discountedReturnsAsync, gae, gaeAsync, tokenGae, tokenGaeAsync,
} from './ops/advantages';
export type {
  AdvantagesOut, AdvantagesResult, DiscountedReturnsInputs, DiscountedReturnsOptions, GaeInputs, GaeOptions, MaskMode,
  TokenGaeInputs, TokenGaeOptions,
} from './ops/advantages';
export {
  maskedMean, maskedMeanAsync, maskedVar, maskedVarAsync, maskedWhiten, maskedWhitenAsync,
} from './ops/statistics';
export type { MaskedMeanOptions, MaskedVarOptions, MaskedWhitenOptions, WhitenPreset } from './ops/statistics';
export {
  AdaptiveKLController, FixedKLController, actorLossFromLogits, actorLossFromLogitsAsync, klPenalty, klPenaltyAsync,
  logprobsFromLogits, logprobsFromLogitsAsync, logprobsFromLogitsBackward, logprobsFromLogitsBackwardAsync,
  ppoPolicyLoss, ppoPolicyLossAsync, shapeRewards, shapeRewardsAsync, valueLoss, valueLossAsync,
} from './ops/policy';
export type {
  ActorLossInputs, ActorLossOptions, ActorLossOut, ActorLossResult, AdaptiveKLOptions, Aggregation, AggregationOptions,
  KlEstimator, KlOptions, KlPenaltyOptions, KlPenaltyOut, KlPenaltyResult, LogprobsBackwardInputs, LogprobsBackwardOptions,
  LogprobsOptions, LogprobsOut, LogprobsResult,
  PolicyLossInputs, PolicyLossOptions, PolicyLossResult, PolicyLossStats, ShapeRewardsInputs, ShapeRewardsOptions,
  ValueLossInputs, ValueLossOptions, ValueLossResult,
} from './ops/policy';
export {
  dpoLoss, dpoLossAsync, groupAdvantages, groupAdvantagesAsync, pairwiseRewardLoss, pairwiseRewardLossAsync,
  sequenceLogprobs, sequenceLogprobsAsync, sequenceLogprobsBackward, sequenceLogprobsBackwardAsync,
} from './ops/preference';
export type {
  DpoInputs, DpoLossType, DpoOptions, DpoResult, GroupAdvantagesOptions, GroupEstimator, PairGradients, PairwiseInputs,
  PairwiseOptions, PairwiseResult, SequenceLogprobsBackwardInputs, SequenceLogprobsOptions,
} from './ops/preference';
export { bfloat16Bits, bfloat16Value, float16Bits, float16Value, fromHalfBits, toHalfBits } from './half';
export type { HalfDtype } from './half';
export {
  loadSafetensors, loadSafetensorsAsync, saveSafetensors, saveSafetensorsAsync, type LoadSafetensorsOptions, type LoadedSafetensors,
} from './io/safetensors';
export { matmul, matmulAsync } from './ops/nn';
export type { MatmulOptions } from './ops/nn';
export * as nn from './nn';
export * as optim from './optim';
export { clipGradNorm } from './optim';
export type { AdamWOptions, Schedule, ScheduleOptions } from './optim';
export * as envs from './envs';
export { PPOTrainer } from './trainers/ppo';
export type { PPOConfig, PPOResult, PPOUpdateMetrics } from './trainers/ppo';
export * as data from './data';
export { RewardTrainer } from './trainers/reward';
export type { RewardConfig, RewardEvalMetrics, RewardSettings, RewardStepMetrics, RewardTrainSummary } from './trainers/reward';
export { DPOTrainer } from './trainers/dpo';
export type { DPOConfig, DPOEvaluation, DPOStepMetrics, DPOSummary } from './trainers/dpo';
export { GRPOTrainer } from './trainers/grpo';
export type { GRPOConfig, GRPOLossType, GRPOStepMetrics, RewardFunction } from './trainers/grpo';
export { RLHFPPOTrainer } from './trainers/rlhf-ppo';
export type { RLHFPPOConfig, RLHFStepMetrics, SequenceReward } from './trainers/rlhf-ppo';
export type { SequencePolicy } from './trainers/policy';
