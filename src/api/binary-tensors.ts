/**
 * Triton's binary tensor data extension for KServe v2 HTTP. A body is a JSON object of
 * `Inference-Header-Content-Length` bytes followed by raw tensor bytes: one section per tensor
 * whose JSON entry has `parameters.binary_data_size`, in the order the JSON lists them.
 *
 * The raw layout is the engine's own (little-endian, row-major, BYTES elements as a 4-byte
 * length and the bytes), so an input's section becomes a tensor as a view of the request body
 * and an output's bytes are appended to the response unchanged. Trade-off: a binary input
 * keeps the whole request body alive until the request settles, instead of a copy per input.
 */

import { encodeBytesElements } from '../tensor/index.ts';
import { type ErrorCode, InfergridError } from '../errors.ts';
import type { InferResponseMeta, Parameters } from '../protocol/index.ts';
import {
  type Datatype,
  ELEMENT_BYTES,
  type Tensor,
  decodeBytesElements,
  describeTensor,
  elementCount,
  flattenJsonData,
  isDatatype,
  tensorFromJson,
} from '../tensor/index.ts';
import {
  type InferBody,
  type InferResponseBody,
  type JsonInput,
  buildInferResponse,
  parseInferBody,
} from './infer-body.ts';

/** The header (lower case, as node reports it) giving the byte length of the body's JSON part. */
export const INFERENCE_HEADER_CONTENT_LENGTH = 'inference-header-content-length';
/** Content type of a response that carries binary outputs after its JSON. */
export const BINARY_CONTENT_TYPE = 'application/octet-stream';

function malformed(message: string): never {
  throw new InfergridError('MALFORMED_REQUEST', message);
}

function invalid(message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', message);
}

/** The header's value as a byte count no larger than the body. */
function headerLengthOf(value: number | string, bodyBytes: number): number {
  const n = typeof value === 'number' ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 0) {
    malformed(
      `Inference-Header-Content-Length must be a non-negative integer (the byte length of the JSON at the start of the body), got ${JSON.stringify(value)}`,
    );
  }
  if (n > bodyBytes) {
    malformed(`Inference-Header-Content-Length is ${n} but the whole body is only ${bodyBytes} bytes`);
  }
  return n;
}

function parseJsonText(text: string, what: string): unknown {
  if (text.length === 0) malformed(`${what} is empty; expected a JSON object`);
  try {
    return JSON.parse(text);
  } catch (err) {
    return malformed(`${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Gives each input with binary_data_size its section of `rest`, in input order (views, no copies). */
function attachBinaryData(inputs: JsonInput[], rest: Buffer, headerGiven: boolean): void {
  const binary = inputs.filter((i) => i.binaryDataSize !== undefined);
  let declared = 0;
  for (const input of binary) declared += input.binaryDataSize!;
  if (declared !== rest.byteLength) {
    const sizes = binary.length
      ? ` (${binary.map((i) => `"${i.name}" ${i.binaryDataSize}`).join(', ')})`
      : ' (no input has parameters.binary_data_size)';
    const hint = headerGiven
      ? ''
      : "; without an Inference-Header-Content-Length header the whole body is JSON: send that header with the JSON's byte length and the tensor bytes after the JSON";
    invalid(
      `binary tensor data: the inputs' binary_data_size add up to ${declared} bytes${sizes}, but ${rest.byteLength} bytes follow the JSON${hint}`,
    );
  }
  let offset = 0;
  for (const input of binary) {
    input.data = rest.subarray(offset, offset + input.binaryDataSize!);
    offset += input.binaryDataSize!;
  }
}

/**
 * Parses an inference request body. Without `headerLength` the whole body is JSON (as a plain
 * KServe v2 request); with it, the first `headerLength` bytes are JSON and the rest are the
 * raw bytes of the inputs that have `parameters.binary_data_size`, which this attaches to
 * those inputs' `data` as Uint8Array views of `body`.
 *
 * `headerLength` may be the header's raw string value. Throws MALFORMED_REQUEST when the body
 * cannot be split or parsed, INVALID_ARGUMENT when the JSON or the sizes are wrong.
 */
export function parseInferRequestBody(
  body: Uint8Array,
  headerLength: number | string | undefined,
): InferBody {
  const buffer = Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const jsonBytes =
    headerLength === undefined ? buffer.byteLength : headerLengthOf(headerLength, buffer.byteLength);
  const what =
    headerLength === undefined
      ? 'request body'
      : `the request's JSON (its first ${jsonBytes} bytes, per Inference-Header-Content-Length)`;
  const parsed = parseInferBody(parseJsonText(buffer.toString('utf8', 0, jsonBytes), what));
  attachBinaryData(parsed.inputs, buffer.subarray(jsonBytes), headerLength !== undefined);
  return parsed;
}

/**
 * Throws `code` unless `data` is a well-formed raw tensor of this datatype and shape: the exact
 * byte length for fixed-size types, 0/1 bytes for BOOL, and for BYTES a valid length-prefixed
 * layout with as many elements as the shape holds.
 */
function checkRawTensor(
  what: string,
  datatype: Datatype,
  shape: readonly number[],
  data: Uint8Array,
  code: ErrorCode,
): void {
  const count = elementCount(shape);
  const tensor = describeTensor(datatype, shape);
  if (datatype === 'BYTES') {
    let elements: number;
    try {
      // at most one view past the shape's count: a hostile body never makes more
      elements = decodeBytesElements(data, what, count + 1).length;
    } catch (err) {
      if (err instanceof InfergridError && err.details?.tooMany)
        throw new InfergridError(
          code,
          `${what}: ${tensor} needs ${count} elements, the binary data holds more`,
        );
      throw new InfergridError(
        code,
        `${(err as Error).message} (binary BYTES elements are each a 4-byte little-endian length, then the bytes)`,
        { cause: err },
      );
    }
    if (elements !== count) {
      throw new InfergridError(
        code,
        `${what}: ${tensor} needs ${count} elements, the binary data holds ${elements > count ? 'more' : elements}`,
      );
    }
    return;
  }
  const size = ELEMENT_BYTES[datatype];
  if (data.byteLength !== count * size) {
    throw new InfergridError(
      code,
      `${what}: ${tensor} needs ${count * size} bytes (${count} elements of ${size}), got ${data.byteLength}`,
    );
  }
  if (datatype === 'BOOL') {
    const i = data.findIndex((b) => b > 1);
    if (i >= 0) {
      throw new InfergridError(
        code,
        `${what}: BOOL element ${i} is byte ${data[i]}; binary BOOL elements are 0 (false) or 1 (true)`,
      );
    }
  }
}

/**
 * The tensor for a parsed input: JSON data goes through tensorFromJson; raw bytes (from
 * parseInferRequestBody) are checked against the datatype and shape and used as they are, as a
 * view. Decoding only: the coordinator checks name, datatype and shape against the model.
 */
export function tensorFromInput(input: JsonInput): Tensor {
  const { name, shape, data } = input;
  if (!isDatatype(input.datatype)) invalid(`input "${name}": unknown datatype "${input.datatype}"`);
  const datatype: Datatype = input.datatype;
  if (data instanceof Uint8Array) {
    checkRawTensor(`input "${name}"`, datatype, shape, data, 'INVALID_ARGUMENT');
    return { name, datatype, shape, data };
  }
  if (data === undefined) {
    invalid(
      `input "${name}": has parameters.binary_data_size but no bytes were attached; send the Inference-Header-Content-Length header and the bytes after the JSON`,
    );
  }
  if (datatype === 'BYTES' && input.parameters?.content_type === 'base64') return bytesFromBase64(input);
  return tensorFromJson(name, datatype, shape, data);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * A BYTES input sent in JSON with `parameters.content_type: "base64"` (as MLServer does): each
 * element is the base64 of raw bytes, e.g. an image, so `curl` can send binary content in JSON.
 */
function bytesFromBase64(input: JsonInput): Tensor {
  const { name, shape, data } = input;
  const flat = flattenJsonData(name, data);
  const expected = shape.reduce((a, b) => a * b, 1);
  if (flat.length !== expected)
    invalid(`input "${name}": shape ${JSON.stringify(shape)} holds ${expected} elements, got ${flat.length}`);
  const elements = flat.map((value, i) => {
    const text = typeof value === 'string' ? value.replace(/\s+/g, '') : undefined;
    if (text === undefined || text.length % 4 !== 0 || !BASE64.test(text))
      invalid(`input "${name}": element ${i} is not base64 (parameters.content_type is "base64")`);
    return Buffer.from(text!, 'base64');
  });
  return { name, datatype: 'BYTES', shape, data: encodeBytesElements(elements) };
}

/**
 * Throws BACKEND_ERROR unless an output's bytes are a well-formed raw tensor of its datatype
 * and shape (what is sent as binary must be, whatever the front door).
 */
export function checkOutputTensor(t: Tensor): void {
  checkRawTensor(`output "${t.name}"`, t.datatype, t.shape, t.data, 'BACKEND_ERROR');
}

/** Which outputs the request asked for as binary: (name) => true to send that output raw. */
export function binaryOutputPredicate(
  body: Pick<InferBody, 'binaryOutputs' | 'binaryDataOutput'>,
): (name: string) => boolean {
  const { binaryOutputs, binaryDataOutput } = body;
  return binaryOutputs ? (name) => binaryOutputs.has(name) : () => binaryDataOutput;
}

/** What encodeInferResponse needs: the worker's answer and what the HTTP edge adds to it. */
export interface InferResponseParts {
  meta: InferResponseMeta;
  outputs: readonly Tensor[];
  /** The request's id, echoed back. */
  id?: string;
  /** Response parameters added over the model's own (e.g. how the request met the cache). */
  parameters?: Parameters;
}

export interface EncodedInferResponse {
  /**
   * The JSON response object when no output is binary (send it as JSON); otherwise the whole
   * body, the JSON followed by the binary outputs' bytes (send it with BINARY_CONTENT_TYPE).
   */
  payload: Buffer | InferResponseBody;
  /** Byte length of the JSON at the start of a Buffer payload: the Inference-Header-Content-Length value. */
  headerLength?: number;
}

/**
 * Builds the response body. Outputs for which `binary(name)` is true get
 * `parameters.binary_data_size` in the JSON instead of `data`, and their bytes follow the JSON
 * in output order, joined with one copy. Throws BACKEND_ERROR when a binary output's bytes do
 * not match its datatype and shape (the worker's fault); JSON outputs may throw as
 * buildInferResponse does.
 */
export function encodeInferResponse(
  response: InferResponseParts,
  binary: (name: string) => boolean,
): EncodedInferResponse {
  const raw = response.outputs.filter((t) => binary(t.name));
  for (const t of raw) checkOutputTensor(t);
  const rawNames = new Set(raw.map((t) => t.name));
  const json = buildInferResponse(response.meta, response.outputs, response.id, (name) => rawNames.has(name));
  if (response.parameters) json.parameters = { ...json.parameters, ...response.parameters };
  if (raw.length === 0) return { payload: json };
  const header = Buffer.from(JSON.stringify(json), 'utf8');
  return {
    payload: Buffer.concat([header, ...raw.map((t) => t.data)]),
    headerLength: header.byteLength,
  };
}
