export {
  Coordinator,
  type CoordinatorOptions,
  type EncodeResult,
  type StreamChunk,
} from './coordinator.ts';
export {
  type DispatchClock,
  type DispatchRequest,
  type DispatchResult,
  Dispatcher,
  type DispatcherOptions,
  RETRY_AFTER_SECONDS,
  type Replica,
  type ReplicaSource,
  SYSTEM_CLOCK,
} from './dispatcher.ts';
export {
  type ControlChangeOptions,
  type ControlEntry,
  type ControlJournal,
  type ControlKind,
  type ControlOp,
  NO_ENTRY,
} from './control-journal.ts';
export { MAX_REPLICATED_CONFIGS, ModelRepository } from './repository.ts';
export { checkBytesTensor, checkRequestShape } from './limits.ts';
export {
  CLASS_COUNT_PARAMETER,
  CLASSIFICATION_PARAMETER,
  MAX_CLASS_COUNT,
  MAX_LABELS_FILE_BYTES,
  classCountOf,
} from './classification.ts';
export { HealthMonitor, type HealthMonitorOptions } from './health-monitor.ts';
export {
  ANONYMOUS,
  type Caller,
  type InferResult,
  type InferenceRequest,
  cacheModeOf,
  shardKeyOf,
} from './request.ts';
export {
  type InferReply,
  WorkerHandle,
  WorkerPool,
  type WorkerPoolEvents,
  type WorkerState,
} from './worker-pool.ts';
