/**
 * A generative model's request on ModelStreamInfer, read as Triton's LLM backends take theirs:
 * besides `text_input`, a one-element tensor per field (vLLM's `stream` and
 * `exclude_input_in_output`, TensorRT-LLM's `max_tokens`, `temperature`, ...) and vLLM's
 * `sampling_parameters` (a JSON object in a BYTES tensor), or the same fields as request
 * parameters. They are folded into the generate extension's fields and parsed by its parser
 * (api/triton-generate-mapping.ts), so gRPC takes what `POST .../generate_stream` takes, with
 * the same limits, and refuses by name what it does not (a sampling option silently dropped
 * gives answers that look right and are not). The engine's own parameters pass as they are.
 */

import { parseGenerateRequest } from '../api/index.ts';
import type { InferenceRequest } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';
import { LLM_INPUT } from '../llm/index.ts';
import { ENGINE_PARAMETERS, type Parameters } from '../protocol/index.ts';
import { tensorToJsonData } from '../tensor/index.ts';

/** vLLM backend's input: the sampling options as one JSON object. */
export const SAMPLING_PARAMETERS_INPUT = 'sampling_parameters';

export interface Generation {
  /** The engine request: `text_input` alone, the sampling options as parameters, never cached. */
  request: InferenceRequest;
  /** Stream partial results (unless `stream: false`). */
  partials: boolean;
  /** Text the answer starts with: the prompt, with `exclude_input_in_output: false`. */
  lead: string;
}

function invalid(message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', message, { details: { param: 'inputs' } });
}

/** The JSON object of a `sampling_parameters` tensor. */
function samplingObject(value: unknown): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(String(value));
  } catch (err) {
    invalid(`input "${SAMPLING_PARAMETERS_INPUT}" is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    invalid(`input "${SAMPLING_PARAMETERS_INPUT}" must be a JSON object of sampling options`);
  return parsed as Record<string, unknown>;
}

export function generationOf(request: InferenceRequest): Generation {
  const engine: Parameters = {};
  const options: Record<string, unknown> = {};
  const put = (name: string, value: unknown, where: string) => {
    if (Object.hasOwn(options, name)) invalid(`"${name}" is given twice (${where} and before); give it once`);
    options[name] = value;
  };
  for (const [name, value] of Object.entries(request.parameters ?? {})) {
    if (ENGINE_PARAMETERS.has(name)) engine[name] = value;
    else put(name, value, 'a parameter');
  }
  const fields: Record<string, unknown> = {};
  for (const t of request.inputs) {
    const data = tensorToJsonData(t);
    if (t.name === LLM_INPUT) {
      fields[LLM_INPUT] = data;
      continue;
    }
    if (data.length !== 1) invalid(`input "${t.name}" must hold one element, it holds ${data.length}`);
    if (t.name === SAMPLING_PARAMETERS_INPUT) {
      for (const [name, value] of Object.entries(samplingObject(data[0])))
        put(name, value, `in ${SAMPLING_PARAMETERS_INPUT}`);
      continue;
    }
    put(t.name, data[0], `input "${t.name}"`);
  }
  const parsed = parseGenerateRequest({ ...fields, parameters: options }, true);
  return {
    request: {
      ...request,
      inputs: parsed.inputs,
      parameters: { ...engine, ...parsed.parameters },
      cacheMode: 'bypass',
    },
    partials: parsed.partials,
    lead: parsed.lead,
  };
}
