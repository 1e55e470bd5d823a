/**
 * KServe v2 inference request and response bodies (JSON). Parsing checks the structure and
 * reports the first problem with its path; tensor contents are checked element by element in
 * tensorFromJson, and against the model by the coordinator (validateInputs), not here.
 *
 * The binary tensor data extension's parameters (binary_data_size, binary_data,
 * binary_data_output) are read here into typed fields and removed from the parameters, so
 * they never reach a model or the cache key; binary-tensors.ts does the byte work.
 */

import { classCountOf } from '../coordinator/index.ts';
import type { InferResponseMeta, Parameters } from '../protocol/index.ts';
import { InfergridError } from '../errors.ts';
import { MAX_TENSOR_RANK, type Tensor, tensorToJsonData } from '../tensor/index.ts';

export interface JsonInput {
  name: string;
  datatype: string;
  shape: number[];
  /**
   * JSON `data` (flat or nested arrays), or a Uint8Array of raw tensor bytes once
   * parseInferRequestBody has attached the input's binary section. Undefined only when
   * `binaryDataSize` is set and the bytes have not been attached.
   */
  data?: unknown;
  /** `parameters.binary_data_size`: the input's bytes follow the JSON header (binary extension). */
  binaryDataSize?: number;
  /** The input's parameters, without the extension's binary_data_size. */
  parameters?: Parameters;
}

export interface InferBody {
  id?: string;
  /** Request parameters for the model, without the binary extension's own. */
  parameters: Parameters;
  inputs: JsonInput[];
  /** Names of the outputs asked for; all when undefined. */
  outputs?: string[];
  /** Request parameter `binary_data_output`: return outputs as binary unless an output says otherwise. */
  binaryDataOutput: boolean;
  /**
   * When `outputs` is given: the listed outputs to return as binary (their own
   * `parameters.binary_data`, else `binaryDataOutput`). Undefined when `outputs` is not given.
   */
  binaryOutputs?: Set<string>;
  /** Outputs asked for as their top classes (the classification extension): name -> count. */
  classification?: Map<string, number>;
}

/** Parameters of the binary tensor data extension: read by the HTTP edge, never passed on. */
export const BINARY_EXTENSION_PARAMETERS: readonly string[] = [
  'binary_data_size',
  'binary_data',
  'binary_data_output',
];

function withoutExtensionParameters(parameters: Parameters): Parameters {
  if (!BINARY_EXTENSION_PARAMETERS.some((k) => Object.hasOwn(parameters, k))) return parameters;
  const rest: Parameters = {};
  for (const [k, v] of Object.entries(parameters)) if (!BINARY_EXTENSION_PARAMETERS.includes(k)) rest[k] = v;
  return rest;
}

function optionalBoolean(value: unknown, where: string): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  bad(`${where} must be true or false, got ${JSON.stringify(value)}`);
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
    if (Array.isArray(input.shape) && input.shape.length > MAX_TENSOR_RANK)
      bad(
        `${where} ("${input.name}"): shape has ${input.shape.length} dimensions; at most ${MAX_TENSOR_RANK}`,
      );
    if (!Array.isArray(input.shape) || !input.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      bad(
        `${where} ("${input.name}"): shape must be a list of non-negative integers, got ${JSON.stringify(input.shape)}`,
      );
    const parameters = parseParameters(input.parameters, `${where}.parameters`);
    const size = parameters.binary_data_size;
    if (size !== undefined && (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)) {
      bad(
        `${where} ("${input.name}"): parameters.binary_data_size must be a non-negative integer (the input's byte count), got ${JSON.stringify(size)}`,
      );
    }
    if (size !== undefined && input.data !== undefined) {
      bad(
        `${where} ("${input.name}"): has both "data" and parameters.binary_data_size; send the tensor either as JSON data or as binary bytes after the JSON, not both`,
      );
    }
    if (size === undefined && input.data === undefined) {
      bad(
        `${where} ("${input.name}"): data is missing; give "data", or parameters.binary_data_size with the bytes after the JSON`,
      );
    }
    return {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape as number[],
      ...(input.data !== undefined ? { data: input.data } : {}),
      ...(size !== undefined ? { binaryDataSize: size as number } : {}),
      parameters: withoutExtensionParameters(parameters),
    };
  });
  const requestParameters = parseParameters(body.parameters, 'parameters');
  const binaryDataOutput =
    optionalBoolean(requestParameters.binary_data_output, 'parameters.binary_data_output') ?? false;
  let parsedOutputs: string[] | undefined;
  let binaryOutputs: Set<string> | undefined;
  let classification: Map<string, number> | undefined;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) bad('"outputs" must be an array of { "name": ... }');
    binaryOutputs = new Set();
    parsedOutputs = outputs.map((o, i) => {
      if (!isRecord(o) || typeof o.name !== 'string') bad(`outputs[${i}] must be an object with a "name"`);
      const name = o.name as string;
      const where = `outputs[${i}] ("${name}").parameters`;
      const parameters = parseParameters(o.parameters, where);
      const binary = optionalBoolean(parameters.binary_data, `${where}.binary_data`);
      const count = classCountOf(parameters, name);
      if (count !== undefined) {
        classification ??= new Map();
        classification.set(name, count);
      }
      // an output's own binary_data overrides the request's binary_data_output (Triton's rule)
      if (binary ?? binaryDataOutput) binaryOutputs!.add(name);
      return name;
    });
  }
  return {
    ...(id !== undefined ? { id: id as string } : {}),
    parameters: withoutExtensionParameters(requestParameters),
    inputs: parsedInputs,
    ...(parsedOutputs ? { outputs: parsedOutputs } : {}),
    binaryDataOutput,
    ...(binaryOutputs ? { binaryOutputs } : {}),
    ...(classification ? { classification } : {}),
  };
}

export interface InferResponseOutput {
  name: string;
  datatype: string;
  shape: number[];
  /** Flat JSON elements; absent for an output sent as binary (then `parameters.binary_data_size`). */
  data?: unknown[];
  parameters?: Parameters;
}

export interface InferResponseBody {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Parameters;
  outputs: InferResponseOutput[];
}

/**
 * The JSON response. Outputs for which `binary(name)` is true carry
 * `parameters.binary_data_size` instead of `data`; their bytes are the caller's to append
 * (encodeInferResponse in binary-tensors.ts does).
 */
export function buildInferResponse(
  meta: InferResponseMeta,
  outputs: readonly Tensor[],
  id: string | undefined,
  binary?: (name: string) => boolean,
): InferResponseBody {
  return {
    model_name: meta.model,
    model_version: meta.version,
    ...(id !== undefined ? { id } : {}),
    ...(meta.parameters ? { parameters: meta.parameters } : {}),
    outputs: outputs.map((t) =>
      binary?.(t.name)
        ? {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
            parameters: { binary_data_size: t.data.byteLength },
          }
        : { name: t.name, datatype: t.datatype, shape: t.shape, data: tensorToJsonData(t) },
    ),
  };
}
