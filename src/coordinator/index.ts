export {
  Coordinator,
  type CoordinatorOptions,
  type DispatchRequest,
  type DispatchResult,
  RETRY_AFTER_SECONDS,
} from './coordinator.ts';
export {
  type InferReply,
  WorkerHandle,
  WorkerPool,
  type WorkerPoolEvents,
  type WorkerState,
} from './worker-pool.ts';
