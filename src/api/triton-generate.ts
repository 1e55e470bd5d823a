/**
 * Triton's generate extension: POST /v2/models/{m}[/versions/{v}]/generate (one JSON response
 * once the text is done) and …/generate_stream (SSE, one `data: {…}` event per response, the
 * stream ended without a terminator), for generative models. The body is mapped to the LLM
 * contract (triton-generate-mapping.ts) and run through the coordinator's streaming entry as
 * the OpenAI API's are (llm-stream.ts): the `infer` scope, the timeout header, cancellation when
 * the client disconnects, backpressure. Errors are KServe's `{"error": …}`: a status before the
 * first token, one error event after it.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { outputText } from './llm-fields.ts';
import { finalResult, generationRequest, replySse, requireGenerative } from './llm-stream.ts';
import { generateResponse, generateSseEncoder, parseGenerateRequest } from './triton-generate-mapping.ts';

export interface GenerateRouteOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
}

interface ModelParams {
  model: string;
  version?: string;
}

export function registerGenerateRoutes(app: FastifyInstance, options: GenerateRouteOptions): void {
  const { coordinator, config } = options;
  const handle =
    (streaming: boolean) => async (req: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
      const receivedAtMs = performance.now();
      const { model, version } = req.params;
      // the model first: an unknown one is 404 and one that does not generate 400, whatever the body
      requireGenerative(coordinator, model, version);
      const parsed = parseGenerateRequest(req.body, streaming);
      (req as { body: unknown }).body = undefined;
      const request = generationRequest(req, reply, config, {
        model,
        version,
        inputs: parsed.inputs,
        parameters: parsed.parameters,
        timeoutParameters: parsed.timeoutParameters,
        receivedAtMs,
      });
      const chunks = coordinator.stream(request, { partials: parsed.partials });
      if (!streaming) {
        const result = await finalResult(chunks);
        return generateResponse(result.meta, parsed.lead + outputText(result.outputs), true);
      }
      await replySse(reply, chunks, generateSseEncoder(parsed.lead));
    };
  for (const base of ['/v2/models/:model', '/v2/models/:model/versions/:version']) {
    app.post(`${base}/generate`, handle(false));
    app.post(`${base}/generate_stream`, handle(true));
  }
}
