/**
 * KServe v2 inference request and response bodies (JSON). Parsing checks the structure and
 * reports the first problem with its path; tensor contents are checked against the model
 * elsewhere (validateInputs) and element by element in tensorFromJson.
 */

import type { InferResponseMeta, Parameters } from '../protocol/index.ts';
import { InfergridError } from '../errors.ts';
import { type Tensor, tensorToJsonData } from '../tensor/index.ts';

export interface JsonInput {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown;
  parameters?: Parameters;
}

export interface InferBody {
  id?: string;
  parameters: Parameters;
  inputs: JsonInput[];
  /** Names of the outputs asked for; all when undefined. */
  outputs?: string[];
}

function bad(message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', message);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseParameters(value: unknown, where: string): Parameters {
  if (value === undefined) return {};
  if (!isRecord(value)) bad(`${where} must be an object of parameter values`);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      bad(`${where}.${k} must be a string, number or boolean`);
    }
  }
  return value as Parameters;
}

export function parseInferBody(body: unknown): InferBody {
  if (!isRecord(body)) bad('request body must be a JSON object with "inputs"');
  const { id, inputs, outputs } = body;
  if (id !== undefined && typeof id !== 'string') bad('"id" must be a string');
  if (!Array.isArray(inputs) || inputs.length === 0) bad('"inputs" must be a non-empty array');
  const parsedInputs = inputs.map((input, i): JsonInput => {
    const where = `inputs[${i}]`;
    if (!isRecord(input)) bad(`${where} must be an object with name, datatype, shape and data`);
    if (typeof input.name !== 'string' || input.name === '') bad(`${where}.name must be a non-empty string`);
    if (typeof input.datatype !== 'string')
      bad(`${where} ("${input.name}"): datatype must be a string such as "FP32"`);
    if (!Array.isArray(input.shape)) bad(`${where} ("${input.name}"): shape must be an array of integers`);
    if (input.data === undefined) bad(`${where} ("${input.name}"): data is missing`);
    return {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape as number[],
      data: input.data,
      parameters: parseParameters(input.parameters, `${where}.parameters`),
    };
  });
  let parsedOutputs: string[] | undefined;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) bad('"outputs" must be an array of { "name": ... }');
    parsedOutputs = outputs.map((o, i) => {
      if (!isRecord(o) || typeof o.name !== 'string') bad(`outputs[${i}] must be an object with a "name"`);
      return o.name as string;
    });
  }
  return {
    ...(id !== undefined ? { id: id as string } : {}),
    parameters: parseParameters(body.parameters, 'parameters'),
    inputs: parsedInputs,
    ...(parsedOutputs ? { outputs: parsedOutputs } : {}),
  };
}

export interface InferResponseBody {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Parameters;
  outputs: { name: string; datatype: string; shape: number[]; data: unknown[] }[];
}

export function buildInferResponse(
  meta: InferResponseMeta,
  outputs: Tensor[],
  id: string | undefined,
): InferResponseBody {
  return {
    model_name: meta.model,
    model_version: meta.version,
    ...(id !== undefined ? { id } : {}),
    ...(meta.parameters ? { parameters: meta.parameters } : {}),
    outputs: outputs.map((t) => ({
      name: t.name,
      datatype: t.datatype,
      shape: t.shape,
      data: tensorToJsonData(t),
    })),
  };
}
