/**
 * The error catalog's codes as gRPC status codes. The message is kept as the status's details,
 * and the engine's own code travels in the trailing metadata (`infergrid-code`), so a client
 * can tell a queue that is full from a worker that is gone where both are UNAVAILABLE. The
 * table is checked by the compiler to name every code: a new code must be given a status.
 */

import { Metadata, status } from '@grpc/grpc-js';
import { type ErrorCode, type InfergridError, toInfergridError } from '../errors.ts';

/** Trailing metadata key carrying the engine's error code. */
export const ERROR_CODE_METADATA = 'infergrid-code';
/** Trailing metadata key saying when to retry, seconds (RATE_LIMITED and the UNAVAILABLE codes that say). */
export const RETRY_AFTER_METADATA = 'retry-after';

/**
 * Chosen as grpc-gateway and Triton map the HTTP statuses these codes have: a client's bad input
 * INVALID_ARGUMENT, what a retry elsewhere or later may fix UNAVAILABLE (which gRPC clients may
 * retry on their own), a limit on size or rate RESOURCE_EXHAUSTED, the engine's or the model's
 * failure INTERNAL.
 */
export const GRPC_STATUS: Readonly<Record<ErrorCode, status>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  MALFORMED_REQUEST: status.INVALID_ARGUMENT,
  MODEL_NOT_FOUND: status.NOT_FOUND,
  PAYLOAD_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: status.UNAVAILABLE,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  CANCELLED: status.CANCELLED,
  OVERLOADED: status.UNAVAILABLE,
  CONNECTION_LOST: status.UNAVAILABLE,
  WORKER_DRAINING: status.UNAVAILABLE,
  BACKEND_ERROR: status.INTERNAL,
  INTERNAL: status.INTERNAL,
  PROTOCOL_ERROR: status.UNAVAILABLE,
  FRAME_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  UNKNOWN_MESSAGE: status.UNAVAILABLE,
  AUTH_FAILED: status.INTERNAL,
  VERSION_MISMATCH: status.INTERNAL,
  MODEL_NOT_READY: status.UNAVAILABLE,
  CONFIG_INVALID: status.INTERNAL,
  NOT_FOUND: status.NOT_FOUND,
  MODEL_LOAD_FAILED: status.INTERNAL,
  UNSUPPORTED_MEDIA_TYPE: status.INVALID_ARGUMENT,
  WORKER_FAULT: status.UNAVAILABLE,
  HEADERS_TOO_LARGE: status.RESOURCE_EXHAUSTED,
  REQUEST_TIMEOUT: status.DEADLINE_EXCEEDED,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  FORBIDDEN: status.PERMISSION_DENIED,
  WORKER_ID_IN_USE: status.ALREADY_EXISTS,
};

/** What a handler's callback (or a stream's destroy) takes: the status, the message, the metadata. */
export interface GrpcError extends Error {
  code: status;
  details: string;
  metadata: Metadata;
}

/** Anything thrown, as a gRPC error: typed errors by the table, anything else INTERNAL. */
export function grpcErrorOf(err: unknown): GrpcError {
  const typed: InfergridError = toInfergridError(err);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA, typed.code);
  const retry = typed.details?.retryAfterSeconds;
  if (typeof retry === 'number') metadata.set(RETRY_AFTER_METADATA, String(retry));
  const out = new Error(typed.message) as GrpcError;
  out.code = GRPC_STATUS[typed.code];
  out.details = typed.message;
  out.metadata = metadata;
  return out;
}
