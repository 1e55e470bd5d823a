/**
 * The one catalog of errors. Code that decides (retry, worker health, HTTP status) reads
 * `code` and `retryable`, never the message text. Errors cross the process boundary as
 * `{ code, message, details }` and are rebuilt here by code.
 *
 * Wire status numbers are append-only: never reuse or renumber one.
 */

interface ErrorSpec {
  /** HTTP status the coordinator answers with. */
  readonly httpStatus: number;
  /** Numeric status on the RPC wire. */
  readonly wireStatus: number;
  /** Another attempt (on another worker) may succeed. */
  readonly retryable: boolean;
  /** Whose fault: a `worker` fault counts against that worker's health; a `client` fault never does. */
  readonly fault: 'client' | 'worker' | 'none';
}

export const ERROR_CODES = {
  /** The request is well-formed JSON but wrong: unknown input, wrong dtype or shape, bad parameter. */
  INVALID_ARGUMENT: { httpStatus: 400, wireStatus: 1, retryable: false, fault: 'client' },
  /** The body could not be parsed at all (not JSON, wrong content type). */
  MALFORMED_REQUEST: { httpStatus: 400, wireStatus: 2, retryable: false, fault: 'client' },
  /** No such model or version. */
  MODEL_NOT_FOUND: { httpStatus: 404, wireStatus: 3, retryable: false, fault: 'client' },
  /** The body is larger than the configured limit. */
  PAYLOAD_TOO_LARGE: { httpStatus: 413, wireStatus: 4, retryable: false, fault: 'client' },
  /** No worker can take the request right now (none has the model ready). */
  UNAVAILABLE: { httpStatus: 503, wireStatus: 5, retryable: true, fault: 'none' },
  /** The request's deadline passed before it completed. */
  DEADLINE_EXCEEDED: { httpStatus: 504, wireStatus: 6, retryable: false, fault: 'none' },
  /** The client went away or asked to cancel. 499 is nginx's "client closed request". */
  CANCELLED: { httpStatus: 499, wireStatus: 7, retryable: false, fault: 'client' },
  /** The worker's queue is full; try again later or elsewhere. */
  OVERLOADED: { httpStatus: 429, wireStatus: 8, retryable: true, fault: 'none' },
  /** The connection to the worker was lost while the request was in flight. */
  CONNECTION_LOST: { httpStatus: 503, wireStatus: 9, retryable: true, fault: 'worker' },
  /** The worker is draining (shutting down) and takes no new requests. */
  WORKER_DRAINING: { httpStatus: 503, wireStatus: 10, retryable: true, fault: 'none' },
  /**
   * The model raised an error while running this request (or returned a malformed output for
   * it). The request's outcome, not the worker's health: it is not retried on another replica,
   * where the same model would fail on the same input, and opens no circuit breaker.
   */
  BACKEND_ERROR: { httpStatus: 500, wireStatus: 11, retryable: false, fault: 'none' },
  /** A bug: something that should not happen. */
  INTERNAL: { httpStatus: 500, wireStatus: 12, retryable: false, fault: 'none' },
  /** The peer broke the RPC protocol (corrupt frame, bad handshake). Closes that connection only. */
  PROTOCOL_ERROR: { httpStatus: 502, wireStatus: 13, retryable: true, fault: 'worker' },
  /** An RPC frame is larger than `maxFrameBytes`. */
  FRAME_TOO_LARGE: { httpStatus: 413, wireStatus: 14, retryable: false, fault: 'none' },
  /** An RPC frame of a kind this side does not know. */
  UNKNOWN_MESSAGE: { httpStatus: 502, wireStatus: 15, retryable: true, fault: 'worker' },
  /** The RPC peer could not prove it holds the connection's key (or this side could not check it). */
  AUTH_FAILED: { httpStatus: 401, wireStatus: 16, retryable: false, fault: 'none' },
  /** The RPC peer speaks an incompatible protocol version. */
  VERSION_MISMATCH: { httpStatus: 502, wireStatus: 17, retryable: false, fault: 'none' },
  /** The model exists on the worker but is not ready (loading, unloading, failed). */
  MODEL_NOT_READY: { httpStatus: 503, wireStatus: 18, retryable: true, fault: 'none' },
  /** The configuration is invalid. */
  CONFIG_INVALID: { httpStatus: 500, wireStatus: 19, retryable: false, fault: 'none' },
  /** No such HTTP route. */
  NOT_FOUND: { httpStatus: 404, wireStatus: 20, retryable: false, fault: 'client' },
  /** The model failed to load (missing file, bad model, schema mismatch). */
  MODEL_LOAD_FAILED: { httpStatus: 500, wireStatus: 21, retryable: false, fault: 'worker' },
  /** The content type is not one the endpoint accepts. */
  UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, wireStatus: 22, retryable: false, fault: 'client' },
  /**
   * The worker could not run the request for a reason of its own, whatever the input: its
   * backend is broken or out of resources, or a fault was injected (sim.failureRate). Another
   * replica may succeed: retried, and counts against the worker's health.
   */
  WORKER_FAULT: { httpStatus: 503, wireStatus: 23, retryable: true, fault: 'worker' },
  /** The request line and headers are larger than the HTTP server reads (node's maxHeaderSize). */
  HEADERS_TOO_LARGE: { httpStatus: 431, wireStatus: 24, retryable: false, fault: 'client' },
  /** The client took longer than coordinator.headersTimeoutMs or bodyTimeoutMs to send its request. */
  REQUEST_TIMEOUT: { httpStatus: 408, wireStatus: 25, retryable: false, fault: 'client' },
  /** An HTTP request without valid credentials for its route (no API key, or an unknown one). */
  UNAUTHENTICATED: { httpStatus: 401, wireStatus: 26, retryable: false, fault: 'client' },
  /** Valid credentials without the scope the route needs. */
  PERMISSION_DENIED: { httpStatus: 403, wireStatus: 27, retryable: false, fault: 'client' },
  /** The API key is over its rate limit; Retry-After says when to come back. */
  RATE_LIMITED: { httpStatus: 429, wireStatus: 28, retryable: false, fault: 'client' },
  /**
   * The server's policy refuses this, whoever asks: a model path outside the repository roots,
   * or a runtime `js` model while repository.allowRuntimeJs is off.
   */
  FORBIDDEN: { httpStatus: 403, wireStatus: 29, retryable: false, fault: 'client' },
  /**
   * A worker registered with the id of a worker that is still connected. Refused, never a
   * replacement: the first keeps serving; a restarted worker gets in once the old connection
   * is gone (closed, or silent for rpc.peerTimeoutMs).
   */
  WORKER_ID_IN_USE: { httpStatus: 409, wireStatus: 30, retryable: false, fault: 'none' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

const CODE_BY_WIRE_STATUS = new Map<number, ErrorCode>(
  (Object.keys(ERROR_CODES) as ErrorCode[]).map((code) => [ERROR_CODES[code].wireStatus, code]),
);

export type ErrorDetails = Record<string, unknown>;

/** The shape an error takes on the wire and in HTTP bodies. */
export interface WireError {
  code: string;
  message: string;
  details?: ErrorDetails;
}

export class InfergridError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails | undefined;

  constructor(code: ErrorCode, message: string, options: { details?: ErrorDetails; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'InfergridError';
    this.code = code;
    this.details = options.details;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].httpStatus;
  }

  get wireStatus(): number {
    return ERROR_CODES[this.code].wireStatus;
  }

  get retryable(): boolean {
    return ERROR_CODES[this.code].retryable;
  }

  /** Whether this failure says something about the worker's health (a client's bad input never does). */
  get isWorkerFault(): boolean {
    return ERROR_CODES[this.code].fault === 'worker';
  }

  toWire(): WireError {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/** Rebuilds an error received from a peer. Unknown codes become INTERNAL, keeping the peer's code. */
export function errorFromWire(wire: unknown): InfergridError {
  if (typeof wire !== 'object' || wire === null) {
    return new InfergridError('PROTOCOL_ERROR', 'peer sent an error without a body');
  }
  const { code, message, details } = wire as Partial<WireError>;
  const text = typeof message === 'string' ? message : 'peer sent an error without a message';
  const extra = typeof details === 'object' && details !== null ? details : undefined;
  if (isErrorCode(code)) return new InfergridError(code, text, extra ? { details: extra } : {});
  return new InfergridError('INTERNAL', text, { details: { ...extra, peerCode: code } });
}

export function codeForWireStatus(status: number): ErrorCode | undefined {
  return CODE_BY_WIRE_STATUS.get(status);
}

/** Wraps anything thrown into an InfergridError, keeping typed errors as they are. */
export function toInfergridError(err: unknown, fallback: ErrorCode = 'INTERNAL'): InfergridError {
  if (err instanceof InfergridError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InfergridError(fallback, message, { cause: err });
}
