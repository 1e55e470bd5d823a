/**
 * The OpenAI-compatible front door: GET /v1/models, POST /v1/completions,
 * /v1/chat/completions and /v1/embeddings, for models that report themselves generative (ModelInfo.llm). A request
 * is mapped to the LLM contract (openai-mapping.ts) and run through the coordinator's streaming
 * entry, which resolves, validates, routes and retries as for any request.
 *
 * Streaming (SSE): the first chunk is pulled before the response starts, so a request that
 * fails before its first token (bad input, unknown model, overload) gets a plain HTTP error in
 * OpenAI's shape; after that a failure is one `data: {"error": …}` event and the end of the
 * stream (no [DONE]). Each chunk is written only once the socket took the last one, so a slow
 * reader holds back credit and the model waits; a client that disconnects cancels the request
 * on its worker.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  ANONYMOUS,
  type Coordinator,
  type InferenceRequest,
  type StreamChunk,
} from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import {
  type OpenAiKind,
  type ResponseHead,
  completionChunk,
  completionResponse,
  embeddingData,
  finishReasonOf,
  openAiErrorBody,
  outputText,
  parseEmbeddingsRequest,
  parseOpenAiRequest,
  responseHead,
  usageChunk,
  usageOf,
} from './openai-mapping.ts';
import { LLM_EMBEDDING_OUTPUT, LLM_INPUT } from '../llm/schema.ts';
import { textTensor } from '../tensor/index.ts';
import { SSE_CONTENT_TYPE, SSE_DONE, sseEvent, writeSse } from './sse.ts';
import { TIMEOUT_HEADER, requestTimeoutMs } from './timeout.ts';

export interface OpenAiRouteOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
}

export function registerOpenAiRoutes(app: FastifyInstance, options: OpenAiRouteOptions): void {
  const { coordinator, config } = options;
  const startedAtS = Math.floor(Date.now() / 1000);

  app.get('/v1/models', async () => {
    const names = new Set<string>();
    for (const entry of coordinator.registry.entries()) {
      if (entry.spec?.llm && coordinator.registry.readyReplicas(entry).length > 0) names.add(entry.name);
    }
    return {
      object: 'list',
      data: [...names].map((id) => ({ id, object: 'model', created: startedAtS, owned_by: 'infergrid' })),
    };
  });

  const handle = (kind: OpenAiKind) => async (req: FastifyRequest, reply: FastifyReply) => {
    const receivedAtMs = performance.now();
    const parsed = parseOpenAiRequest(kind, req.body);
    (req as { body: unknown }).body = undefined;
    const entry = coordinator.resolve(parsed.model);
    if (!coordinator.registry.specOf(entry).llm) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${parsed.model}" is not a generative model; use POST /v2/models/${parsed.model}/infer`,
        { details: { param: 'model' } },
      );
    }
    const controller = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished)
        controller.abort(new InfergridError('CANCELLED', 'client disconnected'));
    });
    const request: InferenceRequest = {
      model: parsed.model,
      inputs: parsed.inputs,
      parameters: parsed.parameters,
      timeoutMs: requestTimeoutMs(
        req.headers[TIMEOUT_HEADER],
        {},
        config.coordinator.requestTimeoutMs,
        config.coordinator.maxRequestTimeoutMs,
      ),
      receivedAtMs,
      cacheMode: 'bypass',
      signal: controller.signal,
      requestId: req.id,
      traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
      caller: req.principal?.caller ?? ANONYMOUS,
    };
    const head = responseHead(kind, parsed.model);
    const chunks = coordinator.stream(request, { partials: parsed.stream });
    if (!parsed.stream) {
      try {
        for await (const chunk of chunks) {
          if (chunk.final) {
            const result = chunk.result;
            return completionResponse(kind, head, outputText(result.outputs), result.meta.parameters);
          }
        }
      } finally {
        await chunks.return(undefined);
      }
      throw new InfergridError('INTERNAL', 'the stream ended without a final answer');
    }
    // the first chunk before the response starts: an early failure is a plain HTTP error
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
    await streamEvents(kind, head, parsed.includeUsage, first, chunks, res);
  };

  app.post('/v1/embeddings', async (req: FastifyRequest) => {
    const receivedAtMs = performance.now();
    const parsed = parseEmbeddingsRequest(req.body);
    (req as { body: unknown }).body = undefined;
    const entry = coordinator.resolve(parsed.model);
    if (!coordinator.registry.specOf(entry).llm) {
      throw new InfergridError('INVALID_ARGUMENT', `model "${parsed.model}" is not a generative model`, {
        details: { param: 'model' },
      });
    }
    const timeoutMs = requestTimeoutMs(
      req.headers[TIMEOUT_HEADER],
      {},
      config.coordinator.requestTimeoutMs,
      config.coordinator.maxRequestTimeoutMs,
    );
    // one engine request per string, all at once: the worker embeds them one after another
    const results = await Promise.all(
      parsed.texts.map((text) =>
        coordinator.infer({
          model: parsed.model,
          inputs: [textTensor(LLM_INPUT, text)],
          outputs: [LLM_EMBEDDING_OUTPUT],
          // the model's cache settings decide (an embedding is a pure function of its input)
          cacheMode: 'normal',
          timeoutMs,
          receivedAtMs,
          requestId: req.id,
          traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
          caller: req.principal?.caller ?? ANONYMOUS,
        }),
      ),
    );
    let promptTokens = 0;
    const data = results.map((r, i) => {
      promptTokens += usageOf(r.meta.parameters).prompt_tokens;
      const vector = r.outputs.find((o) => o.name === LLM_EMBEDDING_OUTPUT);
      if (!vector) throw new InfergridError('INTERNAL', 'the model answered no embedding');
      return embeddingData(i, vector.data, parsed.encoding);
    });
    return {
      object: 'list',
      data,
      model: parsed.model,
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    };
  });

  app.post('/v1/completions', handle('completion'));
  app.post('/v1/chat/completions', handle('chat'));
}

async function streamEvents(
  kind: OpenAiKind,
  head: ResponseHead,
  includeUsage: boolean,
  first: IteratorResult<StreamChunk, void>,
  chunks: AsyncGenerator<StreamChunk, void, undefined>,
  res: import('node:http').ServerResponse,
): Promise<void> {
  let open = true;
  const send = async (data: unknown) => {
    if (open) open = await writeSse(res, sseEvent(data));
  };
  try {
    if (kind === 'chat') await send(completionChunk(kind, head, { role: true, text: '' }, includeUsage));
    let next = first;
    while (open && !next.done) {
      const { result, final } = next.value;
      if (final) {
        // the final answer holds the whole text: every delta was sent already
        await send(
          completionChunk(kind, head, { finishReason: finishReasonOf(result.meta.parameters) }, includeUsage),
        );
        if (includeUsage) await send(usageChunk(kind, head, result.meta.parameters));
        if (open) res.write(SSE_DONE);
        break;
      }
      const text = outputText(result.outputs);
      if (text !== '') await send(completionChunk(kind, head, { text }, includeUsage));
      if (!open) break;
      next = await chunks.next();
    }
  } catch (err) {
    if (open) await send(openAiErrorBody(toInfergridError(err)));
  } finally {
    // a client gone mid-stream: returning the generator cancels the request on its worker
    await chunks.return(undefined);
    res.end();
  }
}
