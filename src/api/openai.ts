/**
 * The OpenAI-compatible front door: GET /v1/models, POST /v1/completions,
 * /v1/chat/completions and /v1/embeddings, for models that report themselves generative (ModelInfo.llm). A request
 * is mapped to the LLM contract (openai-mapping.ts) and run through the coordinator's streaming
 * entry, which resolves, validates, routes and retries as for any request.
 *
 * Streaming is SSE as llm-stream.ts writes it (errors before the first token are statuses in
 * OpenAI's shape, after it one `data: {"error": …}` event), ended by `data: [DONE]` when the
 * generation finished (not after an error).
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { LLM_EMBEDDING_OUTPUT, LLM_INPUT } from '../llm/schema.ts';
import { outputText, usageOf } from './llm-fields.ts';
import { textTensor } from '../tensor/index.ts';
import {
  finalResult,
  generationRequest,
  llmTimeoutMs,
  replySse,
  requireGenerative,
  transportOf,
} from './llm-stream.ts';
import {
  type OpenAiKind,
  completionResponse,
  embeddingData,
  openAiSseEncoder,
  parseEmbeddingsRequest,
  parseOpenAiRequest,
  responseHead,
} from './openai-mapping.ts';

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
    requireGenerative(coordinator, parsed.model);
    const request = generationRequest(req, reply, config, {
      model: parsed.model,
      inputs: parsed.inputs,
      parameters: parsed.parameters,
      receivedAtMs,
    });
    const head = responseHead(kind, parsed.model);
    const chunks = coordinator.stream(request, { partials: parsed.stream });
    if (!parsed.stream) {
      const result = await finalResult(chunks);
      return completionResponse(kind, head, outputText(result.outputs), result.meta.parameters);
    }
    await replySse(reply, chunks, openAiSseEncoder(kind, head, parsed.includeUsage));
  };

  app.post('/v1/embeddings', async (req: FastifyRequest) => {
    const receivedAtMs = performance.now();
    const parsed = parseEmbeddingsRequest(req.body);
    (req as { body: unknown }).body = undefined;
    requireGenerative(coordinator, parsed.model);
    const timeoutMs = llmTimeoutMs(req, config);
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
          ...transportOf(req),
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
