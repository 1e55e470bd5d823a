export { Coordinator, type CoordinatorOptions, type InferResult } from './coordinator.ts';
export {
  type DispatchRequest,
  type DispatchResult,
  Dispatcher,
  type DispatcherOptions,
  RETRY_AFTER_SECONDS,
  SHARD_KEY_PARAMETER,
} from './dispatcher.ts';
export { HealthMonitor, type HealthMonitorOptions } from './health-monitor.ts';
export {
  type InferReply,
  WorkerHandle,
  WorkerPool,
  type WorkerPoolEvents,
  type WorkerState,
} from './worker-pool.ts';
