export {
  Batcher,
  type BatcherClock,
  type BatcherOptions,
  ENGINE_PARAMETERS,
  REAL_CLOCK,
  type SubmitOptions,
  modelParameters,
} from './batcher.ts';
export {
  type CountNs,
  ModelStats,
  type ModelStatsSnapshot,
  type StatsObserver,
  mergeStats,
} from './stats.ts';
export { batchSizeOf, compatibilityKey, concatInputs, splitOutputs } from './tensor-batch.ts';
