/**
 * What the KServe v2 front doors (HTTP in kserve.ts, gRPC in src/grpc/) share around the
 * coordinator's entry point, so both answer the same request the same way: server and model
 * metadata, the engine request built from what the transport parsed (the limits checked before
 * any tensor is decoded, the shard key and cache mode read from the parameters), a request the
 * front door could not parse counted as refused, and a worker's malformed output blamed on it.
 */

import {
  type Caller,
  type Coordinator,
  type InferResult,
  type InferenceRequest,
  cacheModeOf,
  checkRequestShape,
  shardKeyOf,
} from '../coordinator/index.ts';
import type { RequestLimits } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { CACHE_PARAMETER, type Parameters } from '../protocol/index.ts';
import type { ModelEntry } from '../registry/index.ts';
import type { TraceContext } from '../telemetry/index.ts';
import type { Tensor } from '../tensor/index.ts';

export const SERVER_NAME = 'infergrid';
/** Response parameter saying how a request met the cache: hit, miss, joined, bypass, refresh. */
export const CACHE_RESPONSE_PARAMETER = 'infergrid_cache';

/** KServe's model metadata: name, versions, platform and the tensors' names, datatypes and shapes. */
export function modelMetadata(coordinator: Coordinator, entry: ModelEntry) {
  const spec = coordinator.registry.specOf(entry);
  return {
    name: entry.name,
    versions: [...coordinator.registry.versions(entry.name)],
    platform: spec.platform,
    inputs: spec.inputs,
    outputs: spec.outputs,
  };
}

/** A front door's parsed request, before its tensors are decoded. */
export interface InferCall {
  model: string;
  version: string | undefined;
  id: string | undefined;
  /** The request's parameters, without the transport's own. */
  parameters: Parameters;
  /** Names, datatypes and shapes as sent: checked against the limits before `decode` runs. */
  inputs: readonly { name: string; datatype: string; shape: readonly number[] }[];
  /** Decodes the inputs' data into tensors (throws INVALID_ARGUMENT on bad data). */
  decode: () => Tensor[];
  outputs: string[] | undefined;
  /** The classification extension: output name -> how many top classes it answers with. */
  classification?: ReadonlyMap<string, number> | undefined;
  timeoutMs: number;
  receivedAtMs: number;
  requestId: string | undefined;
  traceparent: string | undefined;
  traceContext: TraceContext | undefined;
  caller: Caller;
  signal?: AbortSignal | undefined;
}

/**
 * The engine request for a parsed call: the limits first (a hostile body costs no more than its
 * parse), then the tensors, the shard key and the cache mode.
 */
export function inferenceRequestOf(limits: RequestLimits, call: InferCall): InferenceRequest {
  checkRequestShape(limits, call.inputs, call.id);
  const inputs = call.decode();
  const { parameters } = call;
  return {
    model: call.model,
    version: call.version,
    inputs,
    outputs: call.outputs,
    classification: call.classification,
    parameters: Object.keys(parameters).length ? parameters : undefined,
    id: call.id,
    timeoutMs: call.timeoutMs,
    receivedAtMs: call.receivedAtMs,
    shardKey: shardKeyOf(parameters),
    cacheMode: cacheModeOf(parameters[CACHE_PARAMETER]),
    signal: call.signal,
    requestId: call.requestId,
    traceparent: call.traceparent,
    traceContext: call.traceContext,
    caller: call.caller,
  };
}

/**
 * Runs a front door's parse of one request; whatever it throws is counted as a request the
 * front door refused (metrics, logs, dashboard) and thrown on.
 */
export function parsedOrRefused<T>(
  coordinator: Coordinator,
  model: string,
  transport: { requestId: string | undefined; traceparent: string | undefined; receivedAtMs: number },
  parse: () => T,
): T {
  try {
    return parse();
  } catch (err) {
    coordinator.refused(model, err, transport);
    throw err;
  }
}

/** A worker's output that does not match its datatype and shape: the worker's fault, never the client's. */
export function malformedOutput(result: InferResult, err: unknown): InfergridError {
  return new InfergridError(
    'BACKEND_ERROR',
    `worker ${result.workerId ?? '(cache)'} returned a malformed output: ${(err as Error).message}`,
    { cause: err },
  );
}

/** The response parameters beside the model's own: how the request met the cache, when it did. */
export function cacheParameters(result: InferResult): Parameters | undefined {
  return result.cache ? { [CACHE_RESPONSE_PARAMETER]: result.cache } : undefined;
}
