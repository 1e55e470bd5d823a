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
} from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { Tensor } from '../tensor/index.ts';
import { prefersRespondAsync, replyAccepted, stripAsyncParameter, wantsAsync } from './async-routes.ts';
import {
  BINARY_CONTENT_TYPE,
  INFERENCE_HEADER_CONTENT_LENGTH,
  binaryOutputPredicate,
  encodeInferResponse,
  parseInferRequestBody,
  tensorFromInput,
} from './binary-tensors.ts';
import {
  SERVER_NAME,
  cacheParameters,
  inferenceRequestOf,
  malformedOutput,
  modelMetadata,
  parsedOrRefused,
} from './infer-entry.ts';
import { buildInferResponse, type InferResponseBody, parseInferBody } from './infer-body.ts';
import { TIMEOUT_HEADER, requestTimeoutMs } from './timeout.ts';

/** Response header saying how a request met the cache: hit, miss, joined, bypass, refresh. */
export const CACHE_HEADER = 'infergrid-cache';

interface ModelParams {
  model: string;
  version?: string;
}

export interface KserveRouteOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
  serverVersion: string;
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
    const transport = { requestId: req.id, traceparent, receivedAtMs };
    const { request, binary, isAsync } = parsedOrRefused(coordinator, req.params.model, transport, () => {
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
      const isAsync = wantsAsync(req.headers, body.parameters);
      if (isAsync && (body.binaryOutputs ? body.binaryOutputs.size > 0 : body.binaryDataOutput))
        throw new InfergridError(
          'INVALID_ARGUMENT',
          'an asynchronous request cannot ask for binary outputs: its result is fetched as JSON from /v2/requests/{id}',
        );
      const request = inferenceRequestOf(config.coordinator.limits, {
        model: req.params.model,
        version: req.params.version,
        id: body.id,
        parameters: stripAsyncParameter(body.parameters),
        inputs: body.inputs,
        decode: () => body.inputs.map(tensorFromInput),
        outputs: body.outputs,
        classification: body.classification,
        timeoutMs,
        receivedAtMs,
        requestId: req.id,
        traceparent,
        traceContext: trace?.context,
        caller: req.principal?.caller ?? ANONYMOUS,
      });
      return { request, binary: binaryOutputPredicate(body), isAsync };
    });
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

/**
 * The JSON text of a cache hit's outputs, by the outputs array the cache hands out for every hit
 * on one entry (src/cache/entry.ts): a hit is sent without turning its tensors into JSON again.
 */
const hitOutputsJson = new WeakMap<readonly Tensor[], string>();

/**
 * A cache hit answered in JSON alone: the response text built around its outputs' JSON, encoded
 * once per entry; the same text, key for key, as the object `buildInferResponse` makes.
 */
function hitAnswer(result: InferResult, reply: FastifyReply, id: string | undefined): FastifyReply {
  const { meta, outputs } = result;
  let outputsJson = hitOutputsJson.get(outputs);
  if (outputsJson === undefined) {
    let rendered: InferResponseBody['outputs'];
    try {
      rendered = buildInferResponse(meta, outputs, undefined).outputs;
    } catch (err) {
      throw malformedOutput(result, err);
    }
    // outside the try, as fastify's serializer is for a miss: text too long is not the worker's fault
    outputsJson = JSON.stringify(rendered);
    hitOutputsJson.set(outputs, outputsJson);
  }
  const parameters = { ...meta.parameters, ...cacheParameters(result) };
  const head = JSON.stringify({
    model_name: meta.model,
    model_version: meta.version,
    ...(id !== undefined ? { id } : {}),
    ...(meta.parameters ? { parameters } : {}),
  });
  const tail = meta.parameters ? '}' : `,"parameters":${JSON.stringify(parameters)}}`;
  return reply
    .header(CACHE_HEADER, result.cache)
    .type('application/json; charset=utf-8')
    .send(`${head.slice(0, -1)},"outputs":${outputsJson}${tail}`);
}

/** The KServe response for a result (JSON, or JSON and binary outputs), with how it met the cache. */
function answer(
  result: InferResult,
  reply: FastifyReply | undefined,
  id: string | undefined,
  binary: (name: string) => boolean,
): InferResponseBody | FastifyReply {
  if (reply && result.cache === 'hit' && !result.outputs.some((t) => binary(t.name)))
    return hitAnswer(result, reply, id);
  let encoded: ReturnType<typeof encodeInferResponse>;
  try {
    const parameters = cacheParameters(result);
    encoded = encodeInferResponse(
      {
        meta: result.meta,
        outputs: result.outputs,
        ...(id !== undefined ? { id } : {}),
        ...(parameters ? { parameters } : {}),
      },
      binary,
    );
  } catch (err) {
    // bad output bytes are the worker's fault, never the client's
    throw malformedOutput(result, err);
  }
  // whether the answer came from the cache: a header as well as the response parameter
  if (result.cache) reply?.header(CACHE_HEADER, result.cache);
  if (!Buffer.isBuffer(encoded.payload)) return encoded.payload;
  return reply!
    .header(INFERENCE_HEADER_CONTENT_LENGTH, String(encoded.headerLength))
    .type(BINARY_CONTENT_TYPE)
    .send(encoded.payload);
}
