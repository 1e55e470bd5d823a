export {
  Batcher,
  type BatcherClock,
  type BatcherOptions,
  type BatcherSource,
  DEFAULT_FAIR_SHARE_THRESHOLD,
  type ExecuteContext,
  REAL_CLOCK,
  type SubmitOptions,
} from './batcher.ts';
export {
  type BatchPhasesMs,
  type ComputeTimings,
  type CountNs,
  ModelStats,
  type ModelStatsSnapshot,
  type StatsObserver,
  mergeStats,
} from './stats.ts';
export { batchSizeOf, compatibilityKey, concatInputs, splitOutputs } from './tensor-batch.ts';
