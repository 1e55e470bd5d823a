/**
 * The request parameters the engine reads itself. Every other parameter is the model's: it
 * reaches the backend, keeps batches apart and is part of the cache key. One list, read by
 * the front doors (timeout, async), the coordinator (shard key, cache), the batcher (priority)
 * and the cache key (which leaves them out).
 */

import type { ParameterValue, Parameters } from './messages.ts';

/** Scheduling priority on the worker: 1 most urgent .. the model's priority levels; 0 the default. */
export const PRIORITY_PARAMETER = 'priority';
/**
 * The `priority` parameter as the batcher takes it: a number (KServe parameters may carry it as
 * a string of digits); NaN for anything else, which the batcher refuses.
 */
export function priorityOf(value: ParameterValue | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value);
  return typeof value === 'number' ? value : Number.NaN;
}

/** Triton's per-request timeout, in microseconds. */
export const TIMEOUT_US_PARAMETER = 'timeout';
/** The request's deadline in ms (takes precedence over `timeout`). */
export const TIMEOUT_MS_PARAMETER = 'timeout_ms';
/** Hashed, it picks the model version (traffic split) and the worker: same key, same worker. */
export const SHARD_KEY_PARAMETER = 'shard_key';
/** "bypass" (neither read nor write the response cache) or "refresh" (recompute, then store). */
export const CACHE_PARAMETER = 'cache';
/** true: answer 202 at once and keep the result under /v2/requests/{id}. */
export const ASYNC_PARAMETER = 'async';
/** Triton's binary tensor extension: every output as raw bytes after the JSON. */
export const BINARY_DATA_OUTPUT_PARAMETER = 'binary_data_output';

/** Request parameters the engine reads itself; everything else is the model's. */
export const ENGINE_PARAMETERS: ReadonlySet<string> = new Set([
  PRIORITY_PARAMETER,
  TIMEOUT_US_PARAMETER,
  TIMEOUT_MS_PARAMETER,
  SHARD_KEY_PARAMETER,
  CACHE_PARAMETER,
  ASYNC_PARAMETER,
  BINARY_DATA_OUTPUT_PARAMETER,
]);

/** The model's own parameters, in key order (a new object; empty when there are none). */
export function modelParameters(parameters: Parameters | undefined): Parameters {
  const out: Parameters = {};
  if (!parameters) return out;
  for (const key of Object.keys(parameters).sort())
    if (!ENGINE_PARAMETERS.has(key)) out[key] = parameters[key]!;
  return out;
}
