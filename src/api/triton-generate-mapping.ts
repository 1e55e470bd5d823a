/**
 * Triton's generate extension's bodies mapped to the engine's LLM contract (src/llm/schema.ts)
 * and back. Pure functions, no I/O.
 *
 * A request is one JSON object: `text_input` and the generation fields, at the top level (as
 * TensorRT-LLM's ensemble takes them) or in `parameters` (as the vLLM backend does), read by
 * the same parsers and limits as the OpenAI API (llm-fields.ts). Where Triton passes a key it
 * does not know on to the model, the engine refuses it (400 naming it): a sampling option that
 * is silently dropped makes answers that look right and are not. A response is
 * `{model_name, model_version, text_output}`; the final one also carries the result parameters
 * the worker reported (finish_reason, prompt_tokens, completion_tokens, cached_tokens).
 */

import type { StreamChunk } from '../coordinator/index.ts';
import { LLM_INPUT, LLM_PARAMETERS, LLM_RESULT_PARAMETERS } from '../llm/schema.ts';
import type { InferResponseMeta, Parameters } from '../protocol/index.ts';
import { type Tensor, textTensor } from '../tensor/index.ts';
import { kserveErrorBody } from './errors.ts';
import {
  booleanField,
  invalid,
  isRecord,
  numberField,
  outputText,
  samplingParameters,
  singleTextField,
} from './llm-fields.ts';
import type { SseEncoder } from './llm-stream.ts';

/** A parsed generate request, as the engine will run it. */
export interface GenerateRequest {
  inputs: Tensor[];
  parameters: Parameters;
  /** `timeout_ms`, or Triton's `timeout` (µs), when given: the request's deadline. */
  timeoutParameters: Parameters;
  /** Stream partial answers (generate_stream unless `"stream": false`). */
  partials: boolean;
  /** Text the output starts with: the input, with `exclude_input_in_output: false`. */
  lead: string;
}

/** TensorRT-LLM's names for fields the shared parsers read under OpenAI/vLLM names. */
const ALIASES: Readonly<Record<string, string>> = {
  stop_words: 'stop',
  random_seed: 'seed',
  min_length: 'min_tokens',
};

/** Every field a body may hold (besides `parameters`), aliases included. */
const ACCEPTED: readonly string[] = [
  LLM_INPUT,
  'max_tokens',
  'min_tokens',
  'ignore_eos',
  'temperature',
  'top_p',
  'top_k',
  'seed',
  'repetition_penalty',
  'stop',
  'stream',
  'exclude_input_in_output',
  'timeout_ms',
  'timeout',
  'bad_words',
  'beam_width',
  ...Object.keys(ALIASES),
];

/** Fields whose value is a list of its own; any other field's one-element array is its value. */
const LIST_FIELDS = new Set([LLM_INPUT, 'stop', 'stop_words', 'bad_words']);

/** The top-level fields and `parameters` as one set of fields; a name in both is refused. */
function flatten(body: Record<string, unknown>): Map<string, unknown> {
  const fields = new Map(Object.entries(body));
  const parameters = fields.get('parameters');
  fields.delete('parameters');
  if (parameters === undefined || parameters === null) return fields;
  if (!isRecord(parameters))
    throw invalid('parameters', '"parameters" must be an object of name: value pairs');
  for (const [name, value] of Object.entries(parameters)) {
    if (fields.has(name))
      throw invalid(name, `"${name}" is given both at the top level and in "parameters"; give it once`);
    fields.set(name, value);
  }
  return fields;
}

function checkKnown(fields: Map<string, unknown>): void {
  const unknown = [...fields.keys()].filter((name) => !ACCEPTED.includes(name));
  if (unknown.length === 0) return;
  const names = unknown.map((n) => JSON.stringify(n)).join(', ');
  throw invalid(
    unknown[0]!,
    `unknown field${unknown.length > 1 ? 's' : ''} ${names}: this endpoint takes ${ACCEPTED.join(', ')} (at the top level or in "parameters")`,
  );
}

/** Aliases renamed, one-element arrays unwrapped: the fields as the shared parsers read them. */
function normalise(fields: Map<string, unknown>): Record<string, unknown> {
  for (const [alias, name] of Object.entries(ALIASES)) {
    if (!fields.has(alias)) continue;
    if (fields.has(name)) throw invalid(alias, `"${alias}" and "${name}" are one field; give one of them`);
    fields.set(name, fields.get(alias));
    fields.delete(alias);
  }
  for (const [name, value] of fields) {
    if (!LIST_FIELDS.has(name) && Array.isArray(value) && value.length === 1) fields.set(name, value[0]);
  }
  return Object.fromEntries(fields);
}

/** TensorRT-LLM clients send these at values that change nothing; any other value is refused. */
function checkNoOps(fields: Record<string, unknown>): void {
  const bad = fields.bad_words;
  const badList = typeof bad === 'string' ? [bad] : bad;
  if (bad != null && !(Array.isArray(badList) && badList.every((w) => w === '')))
    throw invalid('bad_words', '"bad_words" is not supported (only empty)');
  const beams = fields.beam_width;
  if (beams != null && beams !== 1)
    throw invalid('beam_width', `"beam_width" must be 1 (no beam search), got ${JSON.stringify(beams)}`);
}

function timeoutParametersOf(fields: Record<string, unknown>): Parameters {
  const out: Parameters = {};
  const ms = numberField(fields, 'timeout_ms', 1, 2 ** 31, true);
  const us = numberField(fields, 'timeout', 1, 2 ** 53, true);
  if (ms !== undefined) out.timeout_ms = ms;
  if (us !== undefined) out.timeout = us;
  return out;
}

/** Parses a POST …/generate (`streaming` false) or …/generate_stream body. */
export function parseGenerateRequest(body: unknown, streaming: boolean): GenerateRequest {
  if (!isRecord(body)) throw invalid('', 'the request body must be a JSON object');
  const raw = flatten(body);
  checkKnown(raw);
  const fields = normalise(raw);
  if (fields[LLM_INPUT] === undefined)
    throw invalid(LLM_INPUT, `"${LLM_INPUT}" is required: the prompt, a string`);
  const text = singleTextField(fields, LLM_INPUT);
  checkNoOps(fields);
  const stream = booleanField(fields, 'stream');
  if (!streaming && stream === true)
    throw invalid('stream', '"stream": true needs POST /v2/models/{model}/generate_stream');
  const partials = streaming && stream !== false;
  const parameters = samplingParameters(fields);
  if (partials) parameters[LLM_PARAMETERS.stream] = true;
  const exclude = booleanField(fields, 'exclude_input_in_output') ?? true;
  return {
    inputs: [textTensor(LLM_INPUT, text)],
    parameters,
    timeoutParameters: timeoutParametersOf(fields),
    partials,
    lead: exclude ? '' : text,
  };
}

/** The result parameters a final response carries beside `text_output`. */
const OUTPUT_PARAMETERS = [
  LLM_RESULT_PARAMETERS.finishReason,
  LLM_RESULT_PARAMETERS.promptTokens,
  LLM_RESULT_PARAMETERS.completionTokens,
  LLM_RESULT_PARAMETERS.cachedTokens,
];

/** One generate response: the model that answered and the text; a final one its accounting too. */
export function generateResponse(meta: InferResponseMeta, text: string, final: boolean): object {
  const response: Record<string, unknown> = {
    model_name: meta.model,
    model_version: meta.version,
    text_output: text,
  };
  if (!final) return response;
  for (const name of OUTPUT_PARAMETERS) {
    const value = meta.parameters?.[name];
    if (value !== undefined) response[name] = value;
  }
  return response;
}

/**
 * generate_stream's events: one response per partial answer with its new text; the final
 * answer (whose text was sent already) a last response with `text_output: ""` and the
 * accounting, or the whole text when no partial came. No terminator: the stream just ends.
 */
export function generateSseEncoder(lead: string): SseEncoder {
  let pending = lead;
  let streamed = false;
  const withLead = (text: string) => {
    const out = pending + text;
    pending = '';
    return out;
  };
  return {
    events({ result, final }: StreamChunk) {
      if (final) {
        const rest = streamed ? '' : outputText(result.outputs);
        return [generateResponse(result.meta, withLead(rest), true)];
      }
      const text = outputText(result.outputs);
      if (text === '') return [];
      streamed = true;
      return [generateResponse(result.meta, withLead(text), false)];
    },
    error: kserveErrorBody,
  };
}
