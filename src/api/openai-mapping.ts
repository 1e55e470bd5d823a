/**
 * The OpenAI API's bodies mapped to the engine's LLM contract (src/llm/schema.ts) and back:
 * a completion's prompt or a chat's messages become `text_input` (chat: the messages as JSON,
 * rendered by the worker with the model's template), sampling fields become request
 * parameters; results and partial results become OpenAI's response and chunk shapes; errors
 * OpenAI's `{ error: { message, type, param, code } }`. Pure functions, no I/O.
 */

import { randomUUID } from 'node:crypto';
import type { StreamChunk } from '../coordinator/index.ts';
import type { InfergridError } from '../errors.ts';
import { contentText } from '../llm/index.ts';
import { LLM_INPUT, LLM_PARAMETERS } from '../llm/schema.ts';
import type { Parameters } from '../protocol/index.ts';
import { type Tensor, textTensor } from '../tensor/index.ts';
import {
  booleanField,
  finishReasonOf,
  invalid,
  isRecord,
  numberField,
  outputText,
  samplingParameters,
  singleTextField,
  usageOf,
} from './llm-fields.ts';
import type { SseEncoder } from './llm-stream.ts';
import { SSE_DONE } from './sse.ts';

export type OpenAiKind = 'completion' | 'chat';

/** A parsed OpenAI request, as the engine will run it. */
export interface OpenAiRequest {
  kind: OpenAiKind;
  model: string;
  inputs: Tensor[];
  parameters: Parameters;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the usage. */
  includeUsage: boolean;
}

function messagesField(body: Record<string, unknown>): { role: string; content: string }[] {
  const v = body.messages;
  if (!Array.isArray(v) || v.length === 0)
    throw invalid('messages', '"messages" must be a non-empty array of { role, content }');
  return v.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isRecord(m) || typeof m.role !== 'string')
      throw invalid(at, `${at} must be an object with a string "role"`);
    return { role: m.role, content: contentText(m.content, at) };
  });
}

/** Parses a POST /v1/completions or /v1/chat/completions body. */
export function parseOpenAiRequest(kind: OpenAiKind, body: unknown): OpenAiRequest {
  if (!isRecord(body)) throw invalid('', 'the request body must be a JSON object');
  if (typeof body.model !== 'string' || body.model === '')
    throw invalid('model', '"model" must name a model (GET /v1/models lists them)');
  const n = body.n;
  if (n !== undefined && n !== null && n !== 1)
    throw invalid(
      'n',
      `"n" must be 1 (one choice per request), got ${JSON.stringify(n)}; send several requests instead`,
    );
  for (const unsupported of ['logprobs', 'echo', 'best_of', 'tools', 'functions', 'logit_bias'] as const) {
    const v = body[unsupported];
    if (v !== undefined && v !== null && v !== false && !(unsupported === 'best_of' && v === 1))
      throw invalid(unsupported, `"${unsupported}" is not supported`);
  }
  const stream = booleanField(body, 'stream') ?? false;
  let includeUsage = false;
  const options = body.stream_options;
  if (options !== undefined && options !== null) {
    if (!stream) throw invalid('stream_options', '"stream_options" is only allowed with "stream": true');
    if (!isRecord(options)) throw invalid('stream_options', '"stream_options" must be an object');
    includeUsage = booleanField(options, 'include_usage') ?? false;
  }
  const parameters = samplingParameters(body);
  const maxCompletionTokens = numberField(body, 'max_completion_tokens', 1, 2 ** 31, true);
  if (maxCompletionTokens !== undefined) parameters[LLM_PARAMETERS.maxTokens] = maxCompletionTokens;
  if (stream) parameters[LLM_PARAMETERS.stream] = true;
  let text: string;
  if (kind === 'chat') {
    text = JSON.stringify(messagesField(body));
    parameters[LLM_PARAMETERS.chat] = true;
  } else text = singleTextField(body, 'prompt');
  return { kind, model: body.model, inputs: [textTensor(LLM_INPUT, text)], parameters, stream, includeUsage };
}

/** The id, object and creation time every response and chunk of one request shares. */
export interface ResponseHead {
  id: string;
  created: number;
  model: string;
}

export function responseHead(kind: OpenAiKind, model: string, nowMs = Date.now()): ResponseHead {
  return {
    id: `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`,
    created: Math.floor(nowMs / 1000),
    model,
  };
}

/** The whole (non-streamed) response. */
export function completionResponse(
  kind: OpenAiKind,
  head: ResponseHead,
  text: string,
  parameters: Parameters | undefined,
): object {
  const finish_reason = finishReasonOf(parameters);
  const choice =
    kind === 'chat'
      ? {
          index: 0,
          message: { role: 'assistant', content: text, refusal: null },
          logprobs: null,
          finish_reason,
        }
      : { index: 0, text, logprobs: null, finish_reason };
  return {
    id: head.id,
    object: kind === 'chat' ? 'chat.completion' : 'text_completion',
    created: head.created,
    model: head.model,
    choices: [choice],
    usage: usageOf(parameters),
  };
}

/**
 * One streamed chunk: a delta of text (`role` on a chat's first chunk), or the finish reason
 * (the last chunk with a choice). With include_usage, every such chunk carries `usage: null`.
 */
export function completionChunk(
  kind: OpenAiKind,
  head: ResponseHead,
  delta: { text?: string; role?: boolean; finishReason?: string },
  includeUsage: boolean,
): object {
  const finish_reason = delta.finishReason ?? null;
  const choice =
    kind === 'chat'
      ? {
          index: 0,
          delta: delta.finishReason
            ? {}
            : { ...(delta.role ? { role: 'assistant' } : {}), content: delta.text ?? '' },
          logprobs: null,
          finish_reason,
        }
      : { index: 0, text: delta.text ?? '', logprobs: null, finish_reason };
  return { ...chunkHead(kind, head), choices: [choice], ...(includeUsage ? { usage: null } : {}) };
}

/** stream_options.include_usage's last chunk: no choices, the usage. */
export function usageChunk(kind: OpenAiKind, head: ResponseHead, parameters: Parameters | undefined): object {
  return { ...chunkHead(kind, head), choices: [], usage: usageOf(parameters) };
}

function chunkHead(kind: OpenAiKind, head: ResponseHead) {
  return {
    id: head.id,
    object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
    created: head.created,
    model: head.model,
  };
}

/**
 * A streamed completion as SSE: a chat opens with the assistant's role, each partial answer is
 * a delta, the final answer (whose whole text was sent already) only the finish reason, then
 * with include_usage the usage; `data: [DONE]` ends it. A failure is OpenAI's error object.
 */
export function openAiSseEncoder(kind: OpenAiKind, head: ResponseHead, includeUsage: boolean): SseEncoder {
  let opened = kind !== 'chat';
  return {
    events({ result, final }: StreamChunk) {
      const events: object[] = [];
      if (!opened) {
        opened = true;
        events.push(completionChunk(kind, head, { role: true, text: '' }, includeUsage));
      }
      const parameters = result.meta.parameters;
      if (final) {
        events.push(completionChunk(kind, head, { finishReason: finishReasonOf(parameters) }, includeUsage));
        if (includeUsage) events.push(usageChunk(kind, head, parameters));
        return events;
      }
      const text = outputText(result.outputs);
      if (text !== '') events.push(completionChunk(kind, head, { text }, includeUsage));
      return events;
    },
    trailer: SSE_DONE,
    error: openAiErrorBody,
  };
}

/** OpenAI's error `type` for an HTTP status. */
function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return status === 503 ? 'service_unavailable_error' : 'server_error';
  return 'invalid_request_error';
}

/** An engine error in OpenAI's shape: `code` is the engine's stable code, `param` the body field when known. */
export function openAiErrorBody(err: InfergridError): {
  error: { message: string; type: string; param: string | null; code: string };
} {
  const param = err.details?.param;
  return {
    error: {
      message: err.message,
      type: errorType(err.httpStatus),
      param: typeof param === 'string' && param !== '' ? param : null,
      code: err.code.toLowerCase(),
    },
  };
}

/** Inputs one POST /v1/embeddings may carry (OpenAI's own limit). */
export const MAX_EMBEDDING_INPUTS = 2048;

export interface EmbeddingsRequest {
  model: string;
  texts: string[];
  encoding: 'float' | 'base64';
}

/** Parses a POST /v1/embeddings body: `input` a string or strings (token arrays are refused). */
export function parseEmbeddingsRequest(body: unknown): EmbeddingsRequest {
  if (!isRecord(body)) throw invalid('', 'the request body must be a JSON object');
  if (typeof body.model !== 'string' || body.model === '')
    throw invalid('model', '"model" must name a model (GET /v1/models lists them)');
  const input = body.input;
  const texts = typeof input === 'string' ? [input] : input;
  if (!Array.isArray(texts) || texts.length === 0 || !texts.every((t) => typeof t === 'string'))
    throw invalid(
      'input',
      '"input" must be a string or a non-empty array of strings (token arrays are not supported)',
    );
  if (texts.length > MAX_EMBEDDING_INPUTS)
    throw invalid(
      'input',
      `"input" holds ${texts.length} strings; at most ${MAX_EMBEDDING_INPUTS} per request`,
    );
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64')
    throw invalid('encoding_format', '"encoding_format" must be "float" or "base64"');
  if (body.dimensions !== undefined && body.dimensions !== null)
    throw invalid('dimensions', '"dimensions" is not supported: the model\'s embedding size is what it is');
  return { model: body.model, texts: texts as string[], encoding: format };
}

/** One embedding in OpenAI's shape: numbers, or base64 of little-endian float32 (what the openai client asks for). */
export function embeddingData(index: number, vector: Uint8Array, encoding: 'float' | 'base64'): object {
  const embedding =
    encoding === 'base64'
      ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64')
      : Array.from(
          new Float32Array(vector.buffer.slice(vector.byteOffset, vector.byteOffset + vector.byteLength)),
        );
  return { object: 'embedding', index, embedding };
}
