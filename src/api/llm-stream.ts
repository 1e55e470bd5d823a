/**
 * What the HTTP front doors for generative models (the OpenAI API, Triton's generate extension)
 * share around the coordinator's streaming entry: the model must generate; the engine request
 * carries the caller, the deadline (the `infergrid-timeout-ms` header) and a signal the client's
 * disconnect aborts; a non-streamed answer is the stream's final result.
 *
 * Streaming (SSE): the first chunk is pulled before the response starts, so a request that
 * fails before its first token (bad input, unknown model, overload) gets a plain HTTP error in
 * the front door's shape; after that a failure is one error event and the end of the stream.
 * Each event is written only once the socket took the last one, so a slow reader holds back
 * credit and the model waits; a client that disconnects cancels the request on its worker.
 */

import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  ANONYMOUS,
  type Coordinator,
  type InferResult,
  type InferenceRequest,
  type StreamChunk,
} from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { Parameters } from '../protocol/index.ts';
import type { Tensor } from '../tensor/index.ts';
import { SSE_CONTENT_TYPE, sseEvent, writeSse } from './sse.ts';
import { TIMEOUT_HEADER, requestTimeoutMs } from './timeout.ts';

type Chunks = AsyncGenerator<StreamChunk, void, undefined>;

/** Resolves the model (NOT_FOUND when unknown) and refuses one that does not generate. */
export function requireGenerative(coordinator: Coordinator, model: string, version?: string): void {
  const entry = coordinator.resolve(model, version);
  if (!coordinator.registry.specOf(entry).llm) {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `model "${model}" is not a generative model; use POST /v2/models/${model}/infer`,
      { details: { param: 'model' } },
    );
  }
}

/**
 * The request's deadline, ms: the `infergrid-timeout-ms` header, else the given parameters
 * (`timeout_ms`, Triton's `timeout` in µs), else the coordinator's default; capped.
 */
export function llmTimeoutMs(
  req: FastifyRequest,
  config: Readonly<InfergridConfig>,
  parameters: Parameters = {},
): number {
  const { requestTimeoutMs: defaultMs, maxRequestTimeoutMs } = config.coordinator;
  return requestTimeoutMs(req.headers[TIMEOUT_HEADER], parameters, defaultMs, maxRequestTimeoutMs);
}

/** The transport's part of an engine request: who asked, its ids and the client's trace. */
export function transportOf(
  req: FastifyRequest,
): Pick<InferenceRequest, 'requestId' | 'traceparent' | 'caller'> {
  return {
    requestId: req.id,
    traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
    caller: req.principal?.caller ?? ANONYMOUS,
  };
}

export interface GenerationCall {
  model: string;
  version?: string | undefined;
  inputs: Tensor[];
  parameters: Parameters;
  /** Where the deadline may also come from (see llmTimeoutMs). */
  timeoutParameters?: Parameters;
  receivedAtMs: number;
}

/** The engine request for a generation; the client disconnecting aborts it. */
export function generationRequest(
  req: FastifyRequest,
  reply: FastifyReply,
  config: Readonly<InfergridConfig>,
  call: GenerationCall,
): InferenceRequest {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort(new InfergridError('CANCELLED', 'client disconnected'));
  });
  return {
    model: call.model,
    version: call.version,
    inputs: call.inputs,
    parameters: call.parameters,
    timeoutMs: llmTimeoutMs(req, config, call.timeoutParameters),
    receivedAtMs: call.receivedAtMs,
    // generation is sampled (and streamed): never answered from the cache
    cacheMode: 'bypass',
    signal: controller.signal,
    ...transportOf(req),
  };
}

/** Pulls a stream to its final result; the stream is closed whatever happens. */
export async function finalResult(chunks: Chunks): Promise<InferResult> {
  try {
    for await (const chunk of chunks) if (chunk.final) return chunk.result;
  } finally {
    await chunks.return(undefined);
  }
  throw new InfergridError('INTERNAL', 'the stream ended without a final answer');
}

/** How a front door turns a stream into SSE events. */
export interface SseEncoder {
  /** The events one chunk becomes (none: skip it); the final chunk's are the last. */
  events(chunk: StreamChunk): unknown[];
  /** Raw text written after the final chunk's events (OpenAI's `data: [DONE]`). */
  trailer?: string;
  /** The event a failure after the response started becomes. */
  error(err: InfergridError): unknown;
}

/**
 * Answers with the stream as SSE. A failure before the first chunk is thrown (the route's error
 * handler answers it as a status); after, it becomes the encoder's error event.
 */
export async function replySse(reply: FastifyReply, chunks: Chunks, encoder: SseEncoder): Promise<void> {
  let first: IteratorResult<StreamChunk, void>;
  try {
    first = await chunks.next();
  } catch (err) {
    await chunks.return(undefined);
    throw err;
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    ...(reply.getHeaders() as Record<string, string>),
    'content-type': SSE_CONTENT_TYPE,
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  await pumpSse(res, first, chunks, encoder);
}

async function pumpSse(
  res: ServerResponse,
  first: IteratorResult<StreamChunk, void>,
  chunks: Chunks,
  encoder: SseEncoder,
): Promise<void> {
  let open = true;
  const send = async (data: unknown) => {
    if (open) open = await writeSse(res, sseEvent(data));
  };
  try {
    let next = first;
    while (open && !next.done) {
      for (const event of encoder.events(next.value)) await send(event);
      if (next.value.final) {
        if (open && encoder.trailer) res.write(encoder.trailer);
        break;
      }
      if (!open) break;
      next = await chunks.next();
    }
  } catch (err) {
    if (open) await send(encoder.error(toInfergridError(err)));
  } finally {
    // a client gone mid-stream: returning the generator cancels the request on its worker
    await chunks.return(undefined);
    res.end();
  }
}
