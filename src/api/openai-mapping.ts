/**
 * The OpenAI API's bodies mapped to the engine's LLM contract (src/llm/schema.ts) and back:
 * a completion's prompt or a chat's messages become `text_input` (chat: the messages as JSON,
 * rendered by the worker with the model's template), sampling fields become request
 * parameters; results and partial results become OpenAI's response and chunk shapes; errors
 * OpenAI's `{ error: { message, type, param, code } }`. Pure functions, no I/O.
 */

import { randomUUID } from 'node:crypto';
import { InfergridError } from '../errors.ts';
import { contentText } from '../llm/index.ts';
import { LLM_INPUT, LLM_OUTPUT, LLM_PARAMETERS, LLM_RESULT_PARAMETERS } from '../llm/schema.ts';
import type { Parameters } from '../protocol/index.ts';
import { type Tensor, decodeBytesElements, textTensor } from '../tensor/index.ts';

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

/** A client's mistake in a body field, naming the field as OpenAI's `param`. */
function invalid(param: string, message: string): InfergridError {
  return new InfergridError('INVALID_ARGUMENT', message, { details: { param } });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An optional number field in [min, max] (integer when asked); null counts as absent. */
function numberField(
  body: Record<string, unknown>,
  name: string,
  min: number,
  max: number,
  integer = false,
): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    throw invalid(
      name,
      `"${name}" must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(v)}`,
    );
  return v;
}

function booleanField(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean')
    throw invalid(name, `"${name}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** At most 4 stop sequences, as OpenAI allows. */
const MAX_STOP_SEQUENCES = 4;

function stopField(body: Record<string, unknown>): string[] | undefined {
  const v = body.stop;
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string') || list.length > MAX_STOP_SEQUENCES)
    throw invalid('stop', `"stop" must be a string or an array of at most ${MAX_STOP_SEQUENCES} strings`);
  return list.filter((s) => s.length > 0);
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

function promptField(body: Record<string, unknown>): string {
  const v = body.prompt;
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === 'string') return v[0];
  if (Array.isArray(v) && v.length > 1 && v.every((p) => typeof p === 'string'))
    throw invalid('prompt', '"prompt": one prompt per request is supported; send several requests');
  throw invalid('prompt', '"prompt" must be a string (token arrays are not supported)');
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
  const maxTokens =
    numberField(body, 'max_completion_tokens', 1, 2 ** 31, true) ??
    numberField(body, 'max_tokens', 1, 2 ** 31, true);
  const parameters: Parameters = {};
  const set = (name: string, value: number | boolean | string | undefined) => {
    if (value !== undefined) parameters[name] = value;
  };
  set(LLM_PARAMETERS.maxTokens, maxTokens);
  set(LLM_PARAMETERS.minTokens, numberField(body, 'min_tokens', 0, 2 ** 31, true));
  set(LLM_PARAMETERS.ignoreEos, booleanField(body, 'ignore_eos'));
  set(LLM_PARAMETERS.temperature, numberField(body, 'temperature', 0, 2));
  set(LLM_PARAMETERS.topP, numberField(body, 'top_p', 0, 1));
  set(LLM_PARAMETERS.topK, numberField(body, 'top_k', -1, 2 ** 31, true));
  set(LLM_PARAMETERS.seed, numberField(body, 'seed', -(2 ** 63), 2 ** 63, true));
  set(LLM_PARAMETERS.repeatPenalty, numberField(body, 'repetition_penalty', 0, 10));
  const stop = stopField(body);
  if (stop && stop.length > 0) parameters[LLM_PARAMETERS.stop] = JSON.stringify(stop);
  if (stream) parameters[LLM_PARAMETERS.stream] = true;
  let text: string;
  if (kind === 'chat') {
    text = JSON.stringify(messagesField(body));
    parameters[LLM_PARAMETERS.chat] = true;
  } else text = promptField(body);
  return { kind, model: body.model, inputs: [textTensor(LLM_INPUT, text)], parameters, stream, includeUsage };
}

/** The text of a result's `text_output` ('' when it has none). */
export function outputText(outputs: readonly Tensor[]): string {
  const t = outputs.find((o) => o.name === LLM_OUTPUT);
  if (!t) return '';
  const [first] = decodeBytesElements(t.data, `"${LLM_OUTPUT}"`);
  return first ? new TextDecoder().decode(first) : '';
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usageOf(parameters: Parameters | undefined): Usage {
  const n = (name: string) => {
    const v = parameters?.[name];
    return typeof v === 'number' && Number.isFinite(v) ? v : 0;
  };
  const prompt = n(LLM_RESULT_PARAMETERS.promptTokens);
  const completion = n(LLM_RESULT_PARAMETERS.completionTokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

export function finishReasonOf(parameters: Parameters | undefined): string {
  const v = parameters?.[LLM_RESULT_PARAMETERS.finishReason];
  return typeof v === 'string' ? v : 'stop';
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
const MAX_EMBEDDING_INPUTS = 2048;

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
