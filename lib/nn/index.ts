// rl.nn: models whose forward and backward run as native kernels, with checkpoints.
import { RlhfError } from '../errors';
import { DeviceSpec } from '../tensor';
import { Mlp, MlpConfig, RewardModel, RewardModelConfig, TokenPolicy, TokenPolicyConfig, mlp, rewardModel, tokenPolicy } from './models';
import { savedModelInfo } from './module';

export { Mlp, RewardModel, TokenPolicy, mlp, rewardModel, tokenPolicy } from './models';
export type {
  InitName, MlpConfig, MlpOptions, RewardModelConfig, RewardModelOptions, TokenPolicyConfig, TokenPolicyGrads,
  TokenPolicyOptions, TokenPolicyOutput,
} from './models';
export { Module } from './module';
export type { Parameter } from './module';
export type { ActivationName } from './kernels';

/** A model saved by model.save(), made again from its saved config and loaded. */
export function loadModel(path: string, opts: { device?: DeviceSpec } = {}): Mlp | TokenPolicy | RewardModel {
  const { kind, config } = savedModelInfo(path);
  const device = opts.device;
  let model: Mlp | TokenPolicy | RewardModel;
  if (kind === 'mlp') model = mlp({ ...(config as MlpConfig), device });
  else if (kind === 'tokenPolicy') model = tokenPolicy({ ...(config as TokenPolicyConfig), device });
  else if (kind === 'rewardModel') model = rewardModel({ ...(config as RewardModelConfig), device });
  else throw new RlhfError('E_FORMAT', `loadModel: '${path}' holds an unknown model kind '${kind}'`);
  model.load(path);
  return model;
}
export { Random } from './random';
export type { RandomState } from './random';
