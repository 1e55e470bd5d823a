/**
 * ModelInferRequest and ModelInferResponse (as @grpc/proto-loader hands them over: snake_case
 * fields, 64-bit integers as decimal strings, oneofs named) to and from the engine's tensors and
 * parameters. Pure functions, no I/O.
 *
 * Inputs come as typed contents (the field of their datatype) or raw bytes
 * (`raw_input_contents`, the engine's own layout, checked as binary HTTP checks it); outputs go
 * out as `raw_output_contents`, as Triton sends them, the worker's bytes unchanged, so they are
 * the bytes binary HTTP sends for the same request.
 */

import {
  MAX_PATH_PARAM_CHARS,
  cacheParameters,
  checkOutputTensor,
  malformedOutput,
  tensorFromInput,
} from '../api/index.ts';
import { type InferResult, classCountOf } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';
import type { Parameters } from '../protocol/index.ts';
import {
  type Datatype,
  MAX_TENSOR_RANK,
  type Tensor,
  encodeBytesElements,
  elementCount,
  isDatatype,
  tensorFromJson,
} from '../tensor/index.ts';

/** InferParameter: one of its values is set, named by `parameter_choice`. */
export interface ProtoParameter {
  parameter_choice?: string;
  bool_param?: boolean;
  int64_param?: string | number;
  string_param?: string;
  double_param?: number;
  uint64_param?: string | number;
}

export interface ProtoContents {
  bool_contents?: boolean[];
  int_contents?: number[];
  int64_contents?: (string | number)[];
  uint_contents?: number[];
  uint64_contents?: (string | number)[];
  fp32_contents?: number[];
  fp64_contents?: number[];
  bytes_contents?: Uint8Array[];
}

type ContentsField = keyof ProtoContents;

export interface ProtoInput {
  name?: string;
  datatype?: string;
  shape?: (string | number)[];
  parameters?: Record<string, ProtoParameter>;
  contents?: ProtoContents | null;
}

export interface ProtoInferRequest {
  model_name?: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, ProtoParameter>;
  inputs?: ProtoInput[];
  outputs?: { name?: string; parameters?: Record<string, ProtoParameter> }[];
  raw_input_contents?: Uint8Array[];
}

export interface ProtoInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, ProtoParameter>;
  outputs: { name: string; datatype: string; shape: number[]; parameters: Record<string, ProtoParameter> }[];
  raw_output_contents: Buffer[];
}

function invalid(message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', message);
}

/**
 * A model name or version from a message, checked against the limit HTTP's path parameters
 * have (so the same name is refused at both doors); undefined when empty and not required.
 */
export function checkedName(value: string | undefined, field: string, required: boolean): string | undefined {
  if (!value) {
    if (required) invalid(`${field} is required`);
    return undefined;
  }
  if (value.length > MAX_PATH_PARAM_CHARS)
    invalid(`${field} is ${value.length} characters; at most ${MAX_PATH_PARAM_CHARS}`);
  return value;
}

/** The contents field each datatype's elements go in; FP16 and BF16 have none (raw only). */
const CONTENTS_FIELD: Readonly<Record<Datatype, ContentsField | undefined>> = {
  BOOL: 'bool_contents',
  UINT8: 'uint_contents',
  UINT16: 'uint_contents',
  UINT32: 'uint_contents',
  UINT64: 'uint64_contents',
  INT8: 'int_contents',
  INT16: 'int_contents',
  INT32: 'int_contents',
  INT64: 'int64_contents',
  FP16: undefined,
  FP32: 'fp32_contents',
  FP64: 'fp64_contents',
  BYTES: 'bytes_contents',
};

const ALL_FIELDS = Object.keys({
  bool_contents: 0,
  int_contents: 0,
  int64_contents: 0,
  uint_contents: 0,
  uint64_contents: 0,
  fp32_contents: 0,
  fp64_contents: 0,
  bytes_contents: 0,
} satisfies Record<ContentsField, 0>) as ContentsField[];

/** The contents fields that hold elements. */
function filledFields(contents: ProtoContents | null | undefined): ContentsField[] {
  if (!contents) return [];
  return ALL_FIELDS.filter((f) => (contents[f]?.length ?? 0) > 0);
}

/** A 64-bit integer (a decimal string from proto-loader) as a number, exact or refused. */
function safeInteger(value: string | number, where: string): number {
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(n))
    invalid(`${where} is ${value}; at most ${Number.MAX_SAFE_INTEGER} in magnitude`);
  return n;
}

/** A request's parameters map as the engine's parameters. */
export function parametersFromProto(
  map: Record<string, ProtoParameter> | undefined,
  where: string,
): Parameters {
  const out: Parameters = {};
  for (const [key, p] of Object.entries(map ?? {})) {
    switch (p.parameter_choice) {
      case 'bool_param':
        out[key] = p.bool_param!;
        break;
      case 'string_param':
        out[key] = p.string_param!;
        break;
      case 'double_param':
        out[key] = p.double_param!;
        break;
      case 'int64_param':
        out[key] = safeInteger(p.int64_param!, `${where} "${key}"`);
        break;
      case 'uint64_param':
        out[key] = safeInteger(p.uint64_param!, `${where} "${key}"`);
        break;
      default:
        invalid(
          `${where} "${key}" has no value; set one of bool_param, int64_param, string_param, double_param`,
        );
    }
  }
  return out;
}

/** The engine's parameters as an InferParameter map: integers as int64, other numbers as double. */
export function parametersToProto(parameters: Parameters | undefined): Record<string, ProtoParameter> {
  const out: Record<string, ProtoParameter> = {};
  for (const [key, value] of Object.entries(parameters ?? {})) {
    if (typeof value === 'boolean') out[key] = { bool_param: value };
    else if (typeof value === 'string') out[key] = { string_param: value };
    else if (Number.isSafeInteger(value)) out[key] = { int64_param: value };
    else out[key] = { double_param: value };
  }
  return out;
}

function shapeOf(input: ProtoInput, where: string): number[] {
  const shape = input.shape ?? [];
  if (shape.length > MAX_TENSOR_RANK)
    invalid(`${where}: shape has ${shape.length} dimensions; at most ${MAX_TENSOR_RANK}`);
  return shape.map((d) => {
    const n = Number(d);
    if (!Number.isSafeInteger(n) || n < 0)
      invalid(`${where}: shape must be non-negative integers, got [${shape.join(',')}]`);
    return n;
  });
}

/** 64-bit elements (decimal strings) into their typed array, each checked against the type's range. */
function bigIntTensor(
  name: string,
  datatype: 'INT64' | 'UINT64',
  shape: number[],
  values: (string | number)[],
): Tensor {
  const array = datatype === 'INT64' ? new BigInt64Array(values.length) : new BigUint64Array(values.length);
  const [min, max] = datatype === 'INT64' ? [-(2n ** 63n), 2n ** 63n - 1n] : [0n, 2n ** 64n - 1n];
  values.forEach((v, i) => {
    const n = BigInt(v);
    if (n < min || n > max) invalid(`input "${name}": element ${i} is ${v}, out of range for ${datatype}`);
    array[i] = n;
  });
  return { name, datatype, shape, data: new Uint8Array(array.buffer) };
}

/** An input's tensor from its typed contents: the field of its datatype, element count and ranges checked. */
export function tensorFromContents(
  name: string,
  datatype: string,
  shape: number[],
  contents: ProtoContents | null | undefined,
): Tensor {
  if (!isDatatype(datatype)) invalid(`input "${name}": unknown datatype "${datatype}"`);
  const field = CONTENTS_FIELD[datatype];
  if (field === undefined)
    invalid(
      `input "${name}": ${datatype} has no contents field in the protocol; send its bytes in raw_input_contents`,
    );
  const filled = filledFields(contents);
  const stray = filled.filter((f) => f !== field);
  if (stray.length > 0)
    invalid(
      `input "${name}": a ${datatype} tensor's elements go in contents.${field}, got contents.${stray.join(', contents.')}`,
    );
  const values = (contents?.[field] ?? []) as unknown[];
  const expected = elementCount(shape);
  if (values.length !== expected)
    invalid(
      `input "${name}": shape [${shape.join(',')}] needs ${expected} elements, contents.${field} has ${values.length}`,
    );
  if (datatype === 'BYTES')
    return { name, datatype, shape, data: encodeBytesElements(values as Uint8Array[]) };
  if (datatype === 'INT64' || datatype === 'UINT64')
    return bigIntTensor(name, datatype, shape, values as (string | number)[]);
  // numbers and booleans: the JSON path checks every element's type and range
  return tensorFromJson(name, datatype, shape, values);
}

/** A ModelInferRequest read far enough for the limits: the tensors are decoded by `decode`. */
export interface ParsedInferRequest {
  model: string;
  version: string | undefined;
  id: string | undefined;
  parameters: Parameters;
  inputs: { name: string; datatype: string; shape: number[] }[];
  outputs: string[] | undefined;
  /** The classification extension: output name -> its top classes asked for (`classification` or `class_count`). */
  classification: Map<string, number> | undefined;
  decode: () => Tensor[];
}

/**
 * Reads a ModelInferRequest. `raw_input_contents`, when used, holds every input's bytes in
 * input order (Triton's rule), and then no input may have typed contents.
 */
export function parseInferRequest(request: ProtoInferRequest): ParsedInferRequest {
  const model = checkedName(request.model_name, 'model_name', true)!;
  const version = checkedName(request.model_version, 'model_version', false);
  const inputs = request.inputs ?? [];
  if (inputs.length === 0) invalid('"inputs" must hold at least one input');
  const raw = request.raw_input_contents ?? [];
  if (raw.length > 0 && raw.length !== inputs.length)
    invalid(
      `raw_input_contents has ${raw.length} entries for ${inputs.length} inputs; when used it holds every input's bytes, in the order of "inputs"`,
    );
  const parsed = inputs.map((input, i) => {
    const where = `inputs[${i}]`;
    if (!input.name) invalid(`${where}.name must be a non-empty string`);
    if (!input.datatype) invalid(`${where} ("${input.name}"): datatype is required, e.g. "FP32"`);
    if (raw.length > 0 && filledFields(input.contents).length > 0)
      invalid(
        `${where} ("${input.name}"): has contents and raw_input_contents; send every input one way, not both`,
      );
    return {
      name: input.name,
      datatype: input.datatype,
      shape: shapeOf(input, `${where} ("${input.name}")`),
    };
  });
  let classification: Map<string, number> | undefined;
  const outputs = request.outputs?.length
    ? request.outputs.map((o, i) => {
        if (!o.name) invalid(`outputs[${i}].name must be a non-empty string`);
        const count = classCountOf(parametersFromProto(o.parameters, `outputs[${i}] parameter`), o.name);
        if (count !== undefined) {
          classification ??= new Map();
          classification.set(o.name, count);
        }
        return o.name;
      })
    : undefined;
  return {
    model,
    version,
    id: request.id || undefined,
    parameters: parametersFromProto(request.parameters, 'parameter'),
    inputs: parsed,
    outputs,
    classification,
    decode: () =>
      parsed.map((p, i) =>
        raw.length > 0
          ? tensorFromInput({ ...p, data: raw[i]! })
          : tensorFromContents(p.name, p.datatype, p.shape, inputs[i]!.contents),
      ),
  };
}

function bufferOf(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * The ModelInferResponse for a result: outputs as raw_output_contents, each checked against its
 * datatype and shape (a malformed one is the worker's BACKEND_ERROR); parameters the model's,
 * how the request met the cache, and `extra`.
 */
export function inferResponseOf(
  result: InferResult,
  id: string | undefined,
  extra?: Parameters,
): ProtoInferResponse {
  try {
    for (const t of result.outputs) checkOutputTensor(t);
  } catch (err) {
    throw malformedOutput(result, err);
  }
  return {
    model_name: result.meta.model,
    model_version: result.meta.version,
    id: id ?? '',
    parameters: parametersToProto({ ...result.meta.parameters, ...cacheParameters(result), ...extra }),
    outputs: result.outputs.map((t) => ({
      name: t.name,
      datatype: t.datatype,
      shape: t.shape,
      parameters: {},
    })),
    raw_output_contents: result.outputs.map((t) => bufferOf(t.data)),
  };
}
