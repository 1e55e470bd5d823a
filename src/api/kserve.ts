/**
 * KServe v2 / Open Inference Protocol REST routes: server and model metadata, health,
 * readiness, and inference with JSON tensors.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CacheMode } from '../cache/index.ts';
import { type HttpRequestTrace, type Logger, SPAN_NAMES } from '../telemetry/index.ts';
import type { Coordinator, DispatchRequest } from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { type ModelEntry, validateInputs } from '../registry/index.ts';
import { type Datatype, isDatatype } from '../tensor/index.ts';
import { SHARD_KEY_PARAMETER } from '../coordinator/index.ts';
import { hashString } from '../routing/index.ts';
import type { AsyncRequests } from '../async/index.ts';
import type { RequestCounts } from './request-counts.ts';
import type { InferResult } from '../coordinator/index.ts';
import { prefersRespondAsync, replyAccepted, stripAsyncParameter, wantsAsync } from './async-routes.ts';
import {
  BINARY_CONTENT_TYPE,
  INFERENCE_HEADER_CONTENT_LENGTH,
  binaryOutputPredicate,
  encodeInferResponse,
  parseInferRequestBody,
  tensorFromInput,
} from './binary-tensors.ts';
import { type InferResponseBody, parseInferBody } from './infer-body.ts';
import { TIMEOUT_HEADER, requestTimeoutMs } from './timeout.ts';

export const SERVER_NAME = 'infergrid';
/** Response header and parameter saying how a request met the cache: hit, miss, joined, bypass, refresh. */
export const CACHE_HEADER = 'infergrid-cache';
export const CACHE_PARAMETER = 'infergrid_cache';

/** The `cache` request parameter: "bypass" (neither read nor write) or "refresh" (recompute, then store). */
function cacheModeOf(value: unknown): CacheMode {
  if (value === undefined) return 'normal';
  if (value === 'bypass' || value === 'refresh') return value;
  throw new InfergridError(
    'INVALID_ARGUMENT',
    `parameter "cache" must be "bypass" or "refresh", got ${JSON.stringify(value)}`,
  );
}

interface ModelParams {
  model: string;
  version?: string;
}

export interface KserveRouteOptions {
  coordinator: Coordinator;
  /** One line per request at debug level (request id, trace id, model, worker, outcome). */
  logger: Logger;
  /** Where asynchronous requests run and keep their results. */
  asyncRequests: AsyncRequests;
  config: Readonly<InfergridConfig>;
  serverVersion: string;
  /** Counts each inference request's outcome per model (for /admin/overview). */
  requestCounts?: RequestCounts;
}

function modelMetadata(coordinator: Coordinator, entry: ModelEntry) {
  const spec = coordinator.registry.specOf(entry);
  return {
    name: entry.name,
    versions: [...coordinator.registry.versions(entry.name)],
    platform: spec.platform,
    inputs: spec.inputs,
    outputs: spec.outputs,
  };
}

export function registerKserveRoutes(app: FastifyInstance, options: KserveRouteOptions): void {
  const { coordinator, config } = options;
  const { registry } = coordinator;

  app.get('/v2', async () => ({
    name: SERVER_NAME,
    version: options.serverVersion,
    extensions: ['model_repository', 'statistics', 'binary_tensor_data'],
  }));

  app.get('/v2/health/live', async () => ({ live: true }));

  app.get('/v2/health/ready', async (_req, reply) => {
    const ready = registry.allReady();
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const entry = registry.resolve(req.params.model, req.params.version);
    return modelMetadata(coordinator, entry);
  };
  app.get('/v2/models/:model', metadata);
  app.get('/v2/models/:model/versions/:version', metadata);

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const entry = registry.resolve(req.params.model, req.params.version);
    const isReady = registry.isReady(entry);
    return reply.code(isReady ? 200 : 503).send({ name: entry.name, version: entry.version, ready: isReady });
  };
  app.get('/v2/models/:model/ready', ready);
  app.get('/v2/models/:model/versions/:version/ready', ready);

  const { metrics, tracing } = coordinator;
  const { logger, requestCounts } = options;
  /** What one request met on its way: for the metrics and the debug log line. */
  interface Seen {
    entry: ModelEntry | undefined;
    workerId: string | undefined;
    cache: string | undefined;
    /** The request's spans, when tracing is on. */
    trace: HttpRequestTrace | undefined;
  }
  const logRequest = (req: FastifyRequest<{ Params: ModelParams }>, seen: Seen, code: string, ms: number) => {
    const traceparent = req.headers.traceparent;
    logger.debug(
      {
        reqId: req.id,
        ...(typeof traceparent === 'string' ? { traceId: traceparent.split('-')[1] } : {}),
        model: seen.entry?.name ?? req.params.model,
        version: seen.entry?.version,
        worker: seen.workerId,
        cache: seen.cache,
        code,
        ms: Math.round(ms * 1000) / 1000,
      },
      'inference request',
    );
  };
  /** Counts every answered request by model and outcome (the async ones when they finish). */
  const infer = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const started = performance.now();
    const seen: Seen = { entry: undefined, workerId: undefined, cache: undefined, trace: undefined };
    if (tracing)
      seen.trace = tracing.startHttp({
        method: req.method,
        route: req.routeOptions.url ?? '/v2/models/:model/infer',
        path: req.url.split('?')[0]!,
        headers: req.headers,
        model: req.params.model,
      });
    try {
      const out = await handleInfer(req, reply, seen, started);
      // every failure is thrown: what returns is a 200, or a 202 for an async request
      const accepted = reply.statusCode === 202;
      seen.trace?.end(reply.statusCode, undefined);
      const ms = performance.now() - started;
      if (!accepted) metrics.onRequest(seen.entry, undefined, ms / 1000);
      requestCounts?.onEnd(req.params.model, undefined);
      if (logger.isLevelEnabled('debug')) logRequest(req, seen, accepted ? 'ACCEPTED' : 'OK', ms);
      return out;
    } catch (err) {
      const typed = toInfergridError(err);
      const code = typed.code;
      seen.trace?.end(typed.httpStatus, err);
      metrics.onRequest(seen.entry, code, 0);
      requestCounts?.onEnd(req.params.model, code);
      if (logger.isLevelEnabled('debug')) logRequest(req, seen, code, performance.now() - started);
      throw err;
    }
  };
  const handleInfer = async (
    req: FastifyRequest<{ Params: ModelParams }>,
    reply: FastifyReply,
    seen: Seen,
    startedAt: number,
  ) => {
    seen.trace?.startPhase(SPAN_NAMES.validate);
    const body = Buffer.isBuffer(req.body)
      ? parseInferRequestBody(req.body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH] as string | undefined)
      : parseInferBody(req.body);
    // the deadline is known before any work, so a bad one costs nothing and the budget
    // counts the coordinator's own time too
    const timeoutMs = requestTimeoutMs(
      req.headers[TIMEOUT_HEADER],
      body.parameters,
      config.coordinator.requestTimeoutMs,
      config.coordinator.maxRequestTimeoutMs,
    );
    const shardKey = body.parameters[SHARD_KEY_PARAMETER];
    const { entry, spec } = coordinator.route(
      req.params.model,
      req.params.version,
      shardKey === undefined ? undefined : hashString(String(shardKey)) / 2 ** 32,
    );
    seen.entry = entry;
    const cacheMode = cacheModeOf(body.parameters.cache);
    const isAsync = wantsAsync(req.headers, body.parameters);
    for (const input of body.inputs) {
      if (!isDatatype(input.datatype)) {
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `input "${input.name}": unknown datatype "${input.datatype}"`,
        );
      }
    }
    validateInputs(spec, body.inputs, body.outputs);
    const inputs = body.inputs.map((i) => tensorFromInput(i, i.datatype as Datatype));
    const binary = binaryOutputPredicate(body);
    if (isAsync && (body.binaryOutputs ? body.binaryOutputs.size > 0 : body.binaryDataOutput))
      throw new InfergridError(
        'INVALID_ARGUMENT',
        'an asynchronous request cannot ask for binary outputs: its result is fetched as JSON from /v2/requests/{id}',
      );
    seen.trace?.endPhase();
    // the parsed JSON arrays are several times the tensor's size: let them go before the
    // request waits on a worker
    for (const input of body.inputs) input.data = undefined;
    (req as { body: unknown }).body = undefined;
    const remainingMs = Math.max(1, Math.round(timeoutMs - (performance.now() - startedAt)));
    const parameters = stripAsyncParameter(body.parameters);
    const request: DispatchRequest = {
      entry,
      inputs,
      outputs: body.outputs,
      parameters: Object.keys(parameters).length ? parameters : undefined,
      id: body.id,
      timeoutMs: remainingMs,
      signal: undefined,
      traceContext: seen.trace?.context,
    };
    if (isAsync) {
      // validated above, so bad input was a 400 now; the run lives on after this reply
      const { id } = options.asyncRequests.submit(
        async (signal) => {
          const runStarted = performance.now();
          try {
            const result = await coordinator.infer({ ...request, signal }, cacheMode);
            const response = answer(result, undefined, body.id, () => false) as object;
            metrics.onRequest(entry, undefined, (performance.now() - runStarted) / 1000);
            return response;
          } catch (err) {
            const e = deadlineMessage(err, timeoutMs);
            metrics.onRequest(entry, e.code, 0);
            throw e;
          }
        },
        { timeoutMs: remainingMs },
      );
      return replyAccepted(reply, id, prefersRespondAsync(req.headers));
    }
    // a client that goes away cancels its request all the way to the worker
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished)
        controller.abort(new InfergridError('CANCELLED', 'client disconnected'));
    });
    request.signal = controller.signal;
    try {
      const result = await coordinator.infer(request, cacheMode);
      seen.workerId = result.workerId;
      seen.cache = result.cache;
      return answer(result, reply, body.id, binary);
    } catch (err) {
      throw deadlineMessage(err, timeoutMs);
    }
  };
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
}

/** Says a deadline in the client's terms (the whole request's), not one step's or attempt's. */
function deadlineMessage(err: unknown, timeoutMs: number): InfergridError {
  const e = toInfergridError(err);
  if (e.code !== 'DEADLINE_EXCEEDED') return e;
  return new InfergridError(
    'DEADLINE_EXCEEDED',
    `request did not complete within its deadline of ${timeoutMs} ms`,
    {
      details: { timeoutMs },
    },
  );
}

/** The KServe response for a result (JSON, or JSON and binary outputs), with how it met the cache. */
function answer(
  result: InferResult,
  reply: FastifyReply | undefined,
  id: string | undefined,
  binary: (name: string) => boolean,
): InferResponseBody | FastifyReply {
  let encoded: ReturnType<typeof encodeInferResponse>;
  try {
    encoded = encodeInferResponse(
      {
        meta: result.meta,
        outputs: result.outputs,
        ...(id !== undefined ? { id } : {}),
        ...(result.cache ? { parameters: { [CACHE_PARAMETER]: result.cache } } : {}),
      },
      binary,
    );
  } catch (err) {
    // bad output bytes are the worker's fault, never the client's
    throw new InfergridError(
      'BACKEND_ERROR',
      `worker ${result.workerId ?? '(cache)'} returned a malformed output: ${(err as Error).message}`,
      { cause: err },
    );
  }
  // whether the answer came from the cache: a header as well as the response parameter
  if (result.cache) reply?.header(CACHE_HEADER, result.cache);
  if (!Buffer.isBuffer(encoded.payload)) return encoded.payload;
  return reply!
    .header(INFERENCE_HEADER_CONTENT_LENGTH, String(encoded.headerLength))
    .type(BINARY_CONTENT_TYPE)
    .send(encoded.payload);
}
