/**
 * The LLM contract (src/llm/schema.ts) as the HTTP front doors for generative models (the
 * OpenAI API, Triton's generate extension) read and write it: body fields checked with one set
 * of limits and turned into request parameters, the prompt as `text_input`, and the answer's
 * text and accounting read back. Pure functions, no I/O; a client's mistake is INVALID_ARGUMENT
 * naming the field (`details.param`).
 */

import { InfergridError } from '../errors.ts';
import { LLM_OUTPUT, LLM_PARAMETERS, LLM_RESULT_PARAMETERS } from '../llm/schema.ts';
import type { Parameters } from '../protocol/index.ts';
import { type Tensor, decodeBytesElements } from '../tensor/index.ts';

/** A client's mistake in a body field, naming the field (OpenAI's `param`). */
export function invalid(param: string, message: string): InfergridError {
  return new InfergridError('INVALID_ARGUMENT', message, { details: { param } });
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An optional number field in [min, max] (integer when asked); null counts as absent. */
export function numberField(
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

export function booleanField(body: Record<string, unknown>, name: string): boolean | undefined {
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

/** A text field holding one prompt: a string, or an array of one string. */
export function singleTextField(body: Record<string, unknown>, name: string): string {
  const v = body[name];
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === 'string') return v[0];
  if (Array.isArray(v) && v.length > 1 && v.every((p) => typeof p === 'string'))
    throw invalid(name, `"${name}": one prompt per request is supported; send several requests`);
  throw invalid(name, `"${name}" must be a string (token arrays are not supported)`);
}

/**
 * The sampling and length fields every front door takes, under their OpenAI/vLLM names, as
 * request parameters: max_tokens, min_tokens, ignore_eos, temperature, top_p, top_k, seed,
 * repetition_penalty, stop. Absent fields set nothing (the worker's defaults apply).
 */
export function samplingParameters(body: Record<string, unknown>): Parameters {
  const parameters: Parameters = {};
  const set = (name: string, value: number | boolean | undefined) => {
    if (value !== undefined) parameters[name] = value;
  };
  set(LLM_PARAMETERS.maxTokens, numberField(body, 'max_tokens', 1, 2 ** 31, true));
  set(LLM_PARAMETERS.minTokens, numberField(body, 'min_tokens', 0, 2 ** 31, true));
  set(LLM_PARAMETERS.ignoreEos, booleanField(body, 'ignore_eos'));
  set(LLM_PARAMETERS.temperature, numberField(body, 'temperature', 0, 2));
  set(LLM_PARAMETERS.topP, numberField(body, 'top_p', 0, 1));
  set(LLM_PARAMETERS.topK, numberField(body, 'top_k', -1, 2 ** 31, true));
  set(LLM_PARAMETERS.seed, numberField(body, 'seed', -(2 ** 63), 2 ** 63, true));
  set(LLM_PARAMETERS.repeatPenalty, numberField(body, 'repetition_penalty', 0, 10));
  const stop = stopField(body);
  if (stop && stop.length > 0) parameters[LLM_PARAMETERS.stop] = JSON.stringify(stop);
  return parameters;
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
  /** Prompt tokens served from the sequence's KV cache (OpenAI's field; when the backend reports it). */
  prompt_tokens_details?: { cached_tokens: number };
}

export function usageOf(parameters: Parameters | undefined): Usage {
  const n = (name: string) => {
    const v = parameters?.[name];
    return typeof v === 'number' && Number.isFinite(v) ? v : 0;
  };
  const prompt = n(LLM_RESULT_PARAMETERS.promptTokens);
  const completion = n(LLM_RESULT_PARAMETERS.completionTokens);
  const usage: Usage = {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
  };
  if (typeof parameters?.[LLM_RESULT_PARAMETERS.cachedTokens] === 'number')
    usage.prompt_tokens_details = { cached_tokens: n(LLM_RESULT_PARAMETERS.cachedTokens) };
  return usage;
}

export function finishReasonOf(parameters: Parameters | undefined): string {
  const v = parameters?.[LLM_RESULT_PARAMETERS.finishReason];
  return typeof v === 'string' ? v : 'stop';
}
