export {
  AsyncRequests,
  type AsyncDeleteOutcome,
  type AsyncRequestsOptions,
  type AsyncRequestsStats,
  type AsyncRun,
  type AsyncSubmitOptions,
  DEFAULT_INSTANCE_LEASE_MS,
  DEFAULT_MAX_PENDING,
  DEFAULT_MAX_RESULT_BYTES,
  DEFAULT_MAX_RESULTS,
  DEFAULT_PENDING_STORE_TTL_MS,
  DEFAULT_RESULT_TTL_MS,
  DEFAULT_SWEEP_INTERVAL_MS,
  isAsyncRequestId,
} from './async-requests.ts';
export { asyncStore, persistentTier } from './persistent-tier.ts';
export {
  type AsyncRecord,
  type AsyncRequestStatus,
  type DoneRecord,
  type FailedRecord,
  type FinishedRecord,
  type PendingRecord,
  INSTANCE_KEY_PREFIX,
  STORE_KEY_PREFIX,
} from './record.ts';
