/**
 * The protocol-neutral request: what every front door (KServe HTTP today; gRPC and the
 * OpenAI API next) parses its wire format into before calling the coordinator's one entry
 * point, `Coordinator.infer` (or `submit` for an asynchronous answer, `stream` for partial
 * results). A front door parses and encodes; the coordinator alone resolves the version and
 * traffic split, validates against the schema, consults the cache, runs a pipeline or
 * dispatches, and retries.
 */

import type { CacheMode, CacheOutcome } from '../cache/index.ts';
import { InfergridError } from '../errors.ts';
import {
  CACHE_PARAMETER,
  type ComputeTimings,
  type InferResponseMeta,
  type Parameters,
  SHARD_KEY_PARAMETER,
} from '../protocol/index.ts';
import type { TraceContext } from '../telemetry/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { StepTrace } from '../pipeline/index.ts';

/**
 * Who sent a request. A front door's request is a `client`'s (the credential's identity goes
 * in `id` once requests are authenticated); a pipeline's step is the `pipeline`'s, and then a
 * failure to resolve or validate it is the pipeline definition's fault, not the client's.
 */
export type Caller =
  | { readonly kind: 'client'; readonly id?: string | undefined }
  | { readonly kind: 'pipeline'; readonly pipeline: string; readonly step: string };

/** The caller of every request that came through a front door without credentials. */
export const ANONYMOUS: Caller = Object.freeze({ kind: 'client' });

export interface InferenceRequest {
  /** The model's name as the client gave it. */
  model: string;
  /** A version the client named; else the traffic split, else the newest served. */
  version?: string | undefined;
  /** Tensors as raw little-endian bytes, decoded from the wire but not yet checked against the model. */
  inputs: Tensor[];
  /** Outputs wanted; undefined: all. */
  outputs?: string[] | undefined;
  /**
   * The classification extension: output name -> how many top classes to return instead of its
   * tensor (classCountOf reads an output's parameters). Applied after the response cache.
   */
  classification?: ReadonlyMap<string, number> | undefined;
  /**
   * The request's parameters: the model's own and the engine's reserved ones (see
   * protocol/parameters.ts). `priority` among them reaches the worker's batcher.
   */
  parameters?: Parameters | undefined;
  /** The client's request id, echoed in the response. */
  id?: string | undefined;
  /** The request's whole time budget, ms, counted from `receivedAtMs`. */
  timeoutMs: number;
  /** `performance.now()` when the front door received the request; default: when the entry is called. */
  receivedAtMs?: number | undefined;
  /** Hashed once: it picks the version in a traffic split and the worker (same key, same worker). */
  shardKey?: string | undefined;
  /** How the request meets the response cache. */
  cacheMode: CacheMode;
  /** Aborts the request everywhere (the client went away, or a pipeline's other step failed). */
  signal?: AbortSignal | undefined;
  /** The front door's id for this request (x-request-id), for logs. */
  requestId?: string | undefined;
  /** The W3C traceparent the client sent, for logs (spans use `traceContext`). */
  traceparent?: string | undefined;
  /** The span the request's work is traced under (the front door's span); undefined: not traced. */
  traceContext?: TraceContext | undefined;
  caller: Caller;
}

/** What answered a request: a worker (workerId), or the cache (cache: 'hit'). */
export interface InferResult {
  meta: InferResponseMeta;
  outputs: Tensor[];
  workerId: string | undefined;
  /** How the request met the cache, when the model caches. */
  cache?: CacheOutcome;
  /** For a pipeline: what each step did. */
  steps?: StepTrace[];
  /** Where its time went on the workers (a pipeline: its steps' summed); none from the cache. */
  timings?: ComputeTimings | undefined;
}

/** The `cache` parameter: "bypass" (neither read nor write) or "refresh" (recompute, then store). */
export function cacheModeOf(value: unknown): CacheMode {
  if (value === undefined) return 'normal';
  if (value === 'bypass' || value === 'refresh') return value;
  throw new InfergridError(
    'INVALID_ARGUMENT',
    `parameter "${CACHE_PARAMETER}" must be "bypass" or "refresh", got ${JSON.stringify(value)}`,
  );
}

/** The `shard_key` parameter as the request's shard key (any front door that carries parameters). */
export function shardKeyOf(parameters: Parameters | undefined): string | undefined {
  const value = parameters?.[SHARD_KEY_PARAMETER];
  return value === undefined ? undefined : String(value);
}
