export {
  Batcher,
  type BatcherClock,
  type BatcherOptions,
  REAL_CLOCK,
  type SubmitOptions,
} from './batcher.ts';
export {
  type CountNs,
  ModelStats,
  type ModelStatsSnapshot,
  type StatsObserver,
  mergeStats,
} from './stats.ts';
export { batchSizeOf, compatibilityKey, concatInputs, splitOutputs } from './tensor-batch.ts';
