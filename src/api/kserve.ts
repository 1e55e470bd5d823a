/**
 * KServe v2 / Open Inference Protocol REST routes: server and model metadata, health,
 * readiness, and inference with JSON tensors.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { HttpRequestTrace } from '../telemetry/index.ts';
import {
  ANONYMOUS,
  type Coordinator,
  type InferResult,
  type InferenceRequest,
  cacheModeOf,
  checkRequestShape,
  shardKeyOf,
} from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { CACHE_PARAMETER } from '../protocol/index.ts';
import type { ModelEntry } from '../registry/index.ts';
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
export const CACHE_RESPONSE_PARAMETER = 'infergrid_cache';

interface ModelParams {
  model: string;
  version?: string;
}

export interface KserveRouteOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
  serverVersion: string;
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
    extensions: ['model_repository', 'statistics', 'binary_tensor_data', 'classification', 'generate'],
  }));

  app.get('/v2/health/live', async () => ({ live: true }));

  app.get('/v2/health/ready', async (_req, reply) => {
    const ready = registry.allReady();
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const entry = coordinator.resolve(req.params.model, req.params.version);
    return modelMetadata(coordinator, entry);
  };
  app.get('/v2/models/:model', metadata);
  app.get('/v2/models/:model/versions/:version', metadata);

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const entry = coordinator.resolve(req.params.model, req.params.version);
    const isReady = registry.isReady(entry);
    return reply.code(isReady ? 200 : 503).send({ name: entry.name, version: entry.version, ready: isReady });
  };
  app.get('/v2/models/:model/ready', ready);
  app.get('/v2/models/:model/versions/:version/ready', ready);

  const { tracing } = coordinator;
  /**
   * The infer route as a front door: parse the body into tensors, read the transport's own
   * fields (deadline header, Prefer, traceparent), hand the request to the coordinator's one
   * entry point and encode its answer. Resolving, validating, caching and routing happen there.
   */
  const infer = async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const receivedAtMs = performance.now();
    const trace = tracing?.startHttp({
      method: req.method,
      route: req.routeOptions.url ?? '/v2/models/:model/infer',
      path: req.url.split('?')[0]!,
      headers: req.headers,
      model: req.params.model,
    });
    const traceparent = typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined;
    try {
      const out = await handleInfer(req, reply, receivedAtMs, trace, traceparent);
      trace?.end(reply.statusCode, undefined);
      return out;
    } catch (err) {
      trace?.end(err instanceof InfergridError ? err.httpStatus : 500, err);
      throw err;
    }
  };
  const handleInfer = async (
    req: FastifyRequest<{ Params: ModelParams }>,
    reply: FastifyReply,
    receivedAtMs: number,
    trace: HttpRequestTrace | undefined,
    traceparent: string | undefined,
  ) => {
    let request: InferenceRequest;
    let binary: (name: string) => boolean;
    let isAsync: boolean;
    try {
      const body = Buffer.isBuffer(req.body)
        ? parseInferRequestBody(req.body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH] as string | undefined)
        : parseInferBody(req.body);
      // the deadline is known before any work, so a bad one costs nothing
      const timeoutMs = requestTimeoutMs(
        req.headers[TIMEOUT_HEADER],
        body.parameters,
        config.coordinator.requestTimeoutMs,
        config.coordinator.maxRequestTimeoutMs,
      );
      // before any tensor is decoded: a hostile body costs no more than its parse
      checkRequestShape(config.coordinator.limits, body.inputs, body.id);
      isAsync = wantsAsync(req.headers, body.parameters);
      if (isAsync && (body.binaryOutputs ? body.binaryOutputs.size > 0 : body.binaryDataOutput))
        throw new InfergridError(
          'INVALID_ARGUMENT',
          'an asynchronous request cannot ask for binary outputs: its result is fetched as JSON from /v2/requests/{id}',
        );
      const inputs = body.inputs.map(tensorFromInput);
      binary = binaryOutputPredicate(body);
      const parameters = stripAsyncParameter(body.parameters);
      request = {
        model: req.params.model,
        version: req.params.version,
        inputs,
        outputs: body.outputs,
        classification: body.classification,
        parameters: Object.keys(parameters).length ? parameters : undefined,
        id: body.id,
        timeoutMs,
        receivedAtMs,
        shardKey: shardKeyOf(parameters),
        cacheMode: cacheModeOf(parameters[CACHE_PARAMETER]),
        signal: undefined,
        requestId: req.id,
        traceparent,
        traceContext: trace?.context,
        caller: req.principal?.caller ?? ANONYMOUS,
      };
    } catch (err) {
      coordinator.refused(req.params.model, err, { requestId: req.id, traceparent, receivedAtMs });
      throw err;
    }
    // the parsed JSON arrays are several times the tensor's size: let them go before the
    // request waits on a worker
    (req as { body: unknown }).body = undefined;
    if (isAsync) {
      // validated by the coordinator before it returns, so bad input is a 400 now
      const { id } = coordinator.submit(request, asyncResponse);
      return replyAccepted(reply, id, prefersRespondAsync(req.headers));
    }
    // a client that goes away cancels its request all the way to the worker
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished)
        controller.abort(new InfergridError('CANCELLED', 'client disconnected'));
    });
    request.signal = controller.signal;
    const result = await coordinator.infer(request);
    return answer(result, reply, request.id, binary);
  };
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
}

/** What GET /v2/requests/{id} returns for an asynchronous request's result: the KServe JSON response. */
function asyncResponse(result: InferResult, request: InferenceRequest): object {
  return answer(result, undefined, request.id, () => false) as object;
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
        ...(result.cache ? { parameters: { [CACHE_RESPONSE_PARAMETER]: result.cache } } : {}),
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
