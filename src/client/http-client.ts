/**
 * A small KServe v2 HTTP client (fetch-based) for examples, tests and benchmarks. Errors from
 * the server come back as InferenceClientError with the HTTP status and the server's code.
 *
 * Tensors travel as JSON unless asked otherwise. With `binary` (or for BYTES inputs given as
 * raw bytes) they travel as Triton's binary tensor data extension: the JSON request, then each
 * such input's raw little-endian bytes; binary outputs come back the same way and are decoded
 * into typed arrays.
 */

import {
  type Datatype,
  ELEMENT_BYTES,
  type NumericArray,
  TYPED_ARRAY,
  bytesOf,
  decodeBytesElements,
  describeTensor,
  elementCount,
  encodeBytesElements,
  fromHalfBits,
  isDatatype,
  toHalfBits,
  typedView,
} from '../tensor/index.ts';

/** Request and response header giving the byte length of the body's JSON part (binary extension). */
const INFERENCE_HEADER_CONTENT_LENGTH = 'inference-header-content-length';

export interface ClientTensor {
  name: string;
  datatype: string;
  shape: number[];
  /**
   * The elements, flat in row-major order: numbers or a typed array for numeric datatypes
   * (bigints too for INT64/UINT64), booleans for BOOL, strings for BYTES. BYTES elements may
   * also be raw bytes (`Uint8Array`/`Buffer`, e.g. an encoded image); such an input is always
   * sent as binary tensor data, because JSON cannot carry arbitrary bytes.
   */
  data:
    | ArrayLike<number>
    | ArrayLike<bigint>
    | readonly string[]
    | readonly boolean[]
    | readonly (string | Uint8Array)[];
}

export interface InferOutput {
  name: string;
  datatype: string;
  shape: number[];
  /**
   * The elements, flat. From JSON: numbers, booleans or strings. From binary tensor data: a
   * typed array for numeric datatypes (Float32Array for FP32 and FP16, BigInt64Array and
   * BigUint64Array for INT64 and UINT64, Int32Array for INT32, ...), booleans for BOOL, and a
   * Buffer per element for BYTES (`.toString()` gives UTF-8 text). Binary views share the
   * response's memory.
   */
  data: unknown[] | NumericArray;
  parameters?: Record<string, unknown>;
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: InferOutput[];
}

export interface InferOptions {
  version?: string;
  outputs?: string[];
  parameters?: Record<string, string | number | boolean>;
  id?: string;
  /** Sent as the infergrid-timeout-ms header. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Send every input and ask for every output as binary tensor data (Triton's extension):
   * no JSON numbers either way, exact FP16/INT64 values, outputs as typed arrays (see
   * InferOutput.data). Default false: JSON, except BYTES inputs given as raw bytes.
   */
  binary?: boolean;
}

export class InferenceClientError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  readonly retryAfter: string | null;

  constructor(status: number, message: string, code: string | undefined, retryAfter: string | null) {
    super(message);
    this.name = 'InferenceClientError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function toJsonData(data: ClientTensor['data']): unknown[] {
  // typed arrays serialise as objects; BigInt does not serialise at all
  return Array.from(data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' ? Number(v) : v));
}

const INT_RANGE: Partial<Record<Datatype, readonly [number, number]>> = {
  UINT8: [0, 0xff],
  UINT16: [0, 0xffff],
  UINT32: [0, 0xffffffff],
  INT8: [-0x80, 0x7f],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff],
};

/** Whether an input carries raw BYTES elements, which only binary tensor data can send. */
function hasRawElements(t: ClientTensor): boolean {
  if (t.datatype !== 'BYTES') return false;
  const data = t.data as ArrayLike<unknown>;
  for (let i = 0; i < data.length; i++) if (data[i] instanceof Uint8Array) return true;
  return false;
}

/**
 * An input's elements as raw tensor bytes. A typed array that already is the datatype's
 * layout is sent as it is (no copy); anything else is converted, element by element, with a
 * TypeError naming the input and element the server could no longer report.
 */
function inputBytes(t: ClientTensor): Uint8Array {
  const { name, datatype } = t;
  const data = t.data as ArrayLike<unknown>;
  if (!isDatatype(datatype)) throw new TypeError(`input "${name}": unknown datatype "${datatype}"`);
  const bad = (i: number, expected: string): never => {
    throw new TypeError(
      `input "${name}": element ${i} is ${String(data[i])}, expected ${expected} for ${datatype}`,
    );
  };
  if (datatype === 'BYTES') {
    return encodeBytesElements(
      Array.from(data, (v, i) => {
        if (typeof v === 'string') return Buffer.from(v, 'utf8');
        if (v instanceof Uint8Array) return v;
        return bad(i, 'a string or a Uint8Array');
      }),
    );
  }
  const Ctor = TYPED_ARRAY[datatype];
  // FP16's typed array holds bit patterns and BOOL's any byte: those are always converted
  if (datatype !== 'FP16' && datatype !== 'BOOL' && data instanceof Ctor) return bytesOf(data);
  const out = new Ctor(data.length);
  const range = INT_RANGE[datatype];
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (datatype === 'BOOL') {
      if (typeof v !== 'boolean' && v !== 0 && v !== 1) bad(i, 'true or false');
      out[i] = v ? 1 : 0;
    } else if (datatype === 'INT64' || datatype === 'UINT64') {
      if (typeof v !== 'bigint' && !Number.isSafeInteger(v)) bad(i, 'an integer (number or bigint)');
      out[i] = BigInt(v as number | bigint);
    } else if (typeof v !== 'number') {
      bad(i, 'a number');
    } else if (datatype === 'FP16') {
      out[i] = toHalfBits(v as number);
    } else if (range && !(Number.isInteger(v) && v >= range[0] && v <= range[1])) {
      bad(i, `an integer in [${range[0]}, ${range[1]}]`);
    } else {
      out[i] = v as number;
    }
  }
  return bytesOf(out);
}

/**
 * The body and headers of an inference request. Inputs go as binary tensor data when
 * `options.binary` is set or they carry raw BYTES elements; the rest as JSON `data`. With
 * `options.binary` the request also asks for every output as binary (binary_data_output).
 */
export function encodeInferRequest(
  inputs: readonly ClientTensor[],
  options: Pick<InferOptions, 'id' | 'parameters' | 'outputs' | 'binary'> = {},
): { body: string | Buffer; headers: Record<string, string> } {
  const raws: Uint8Array[] = [];
  const jsonInputs = inputs.map((t) => {
    const head = { name: t.name, datatype: t.datatype, shape: t.shape };
    if (!options.binary && !hasRawElements(t)) return { ...head, data: toJsonData(t.data) };
    const bytes = inputBytes(t);
    raws.push(bytes);
    return { ...head, parameters: { binary_data_size: bytes.byteLength } };
  });
  const parameters = options.binary
    ? { ...options.parameters, binary_data_output: true }
    : options.parameters;
  const text = JSON.stringify({
    ...(options.id ? { id: options.id } : {}),
    ...(parameters ? { parameters } : {}),
    inputs: jsonInputs,
    ...(options.outputs ? { outputs: options.outputs.map((name) => ({ name })) } : {}),
  });
  if (raws.length === 0) return { body: text, headers: { 'content-type': 'application/json' } };
  const json = Buffer.from(text, 'utf8');
  return {
    body: Buffer.concat([json, ...raws]),
    headers: {
      'content-type': 'application/octet-stream',
      [INFERENCE_HEADER_CONTENT_LENGTH]: String(json.byteLength),
    },
  };
}

/** A binary output's bytes as usable elements (see InferOutput.data); views where aligned. */
function decodeOutputData(name: string, datatype: string, bytes: Uint8Array): InferOutput['data'] {
  if (!isDatatype(datatype)) throw new Error(`output "${name}": unknown datatype "${datatype}"`);
  if (datatype === 'BYTES') {
    return decodeBytesElements(bytes, `output "${name}"`).map((e) =>
      Buffer.from(e.buffer, e.byteOffset, e.byteLength),
    );
  }
  if (bytes.byteLength % ELEMENT_BYTES[datatype] !== 0) {
    throw new Error(
      `output "${name}": ${bytes.byteLength} bytes is not a whole number of ${datatype} elements`,
    );
  }
  if (datatype === 'BOOL') return Array.from(bytes, (b) => b !== 0);
  if (datatype === 'FP16') return Float32Array.from(typedView('FP16', bytes) as Uint16Array, fromHalfBits);
  return typedView(datatype, bytes);
}

/**
 * Decodes an inference response body. Without `headerLength` (the
 * Inference-Header-Content-Length header's value) the body is all JSON; with it, the outputs
 * with `parameters.binary_data_size` take their bytes, in order, from after the JSON. A body
 * that does not add up throws InferenceClientError with code PROTOCOL_ERROR.
 */
export function decodeInferResponse(
  body: Uint8Array,
  headerLength: string | number | null | undefined,
  status = 200,
): InferResponse {
  const buffer = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const broken = (message: string, cause?: unknown): never => {
    const err = new InferenceClientError(
      status,
      `malformed inference response: ${message}`,
      'PROTOCOL_ERROR',
      null,
    );
    if (cause !== undefined) err.cause = cause;
    throw err;
  };
  const jsonBytes =
    headerLength === null || headerLength === undefined ? buffer.byteLength : Number(headerLength);
  if (!Number.isSafeInteger(jsonBytes) || jsonBytes < 0 || jsonBytes > buffer.byteLength) {
    broken(
      `Inference-Header-Content-Length ${JSON.stringify(headerLength)} does not fit a ${buffer.byteLength}-byte body`,
    );
  }
  let response: InferResponse;
  try {
    response = JSON.parse(buffer.toString('utf8', 0, jsonBytes)) as InferResponse;
  } catch (err) {
    return broken(`the JSON part is not valid JSON: ${(err as Error).message}`, err);
  }
  let offset = jsonBytes;
  for (const output of response.outputs ?? []) {
    const size = output.parameters?.binary_data_size;
    if (size === undefined) continue;
    if (
      typeof size !== 'number' ||
      !Number.isSafeInteger(size) ||
      size < 0 ||
      offset + size > buffer.byteLength
    ) {
      broken(
        `output "${output.name}" has binary_data_size ${JSON.stringify(size)} but ${buffer.byteLength - offset} bytes remain`,
      );
    }
    try {
      output.data = decodeOutputData(
        output.name,
        output.datatype,
        buffer.subarray(offset, offset + (size as number)),
      );
    } catch (err) {
      broken((err as Error).message, err);
    }
    const count = elementCount(output.shape);
    if (output.data.length !== count) {
      broken(
        `output "${output.name}": ${describeTensor(output.datatype, output.shape)} needs ${count} elements, got ${output.data.length}`,
      );
    }
    offset += size as number;
  }
  if (offset !== buffer.byteLength) {
    broken(`${buffer.byteLength - offset} bytes after the last binary output`);
  }
  return response;
}

export class InferenceClient {
  readonly baseUrl: string;
  readonly #authorization: Record<string, string>;

  /** `apiKey`: sent as `Authorization: Bearer` on every request (a coordinator with auth.apiKeys). */
  constructor(baseUrl: string, options: { apiKey?: string | undefined } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#authorization = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
  }

  /** Sends a request; answers the body and its Inference-Header-Content-Length, or throws the server's error. */
  async #send(
    method: string,
    path: string,
    init: { body?: string | Buffer; headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<{ body: Buffer; headerLength: string | null; status: number }> {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: { ...this.#authorization, ...init.headers },
      ...(init.body === undefined ? {} : { body: init.body }),
      ...(init.signal ? { signal: init.signal } : {}),
    });
    const body = Buffer.from(await response.arrayBuffer());
    if (!response.ok) {
      const text = body.toString('utf8');
      let err: { error?: string; code?: string } | undefined;
      try {
        err = text ? JSON.parse(text) : undefined;
      } catch {
        err = undefined;
      }
      throw new InferenceClientError(
        response.status,
        err?.error ?? `HTTP ${response.status}: ${text.slice(0, 200)}`,
        err?.code,
        response.headers.get('retry-after'),
      );
    }
    return {
      body,
      headerLength: response.headers.get(INFERENCE_HEADER_CONTENT_LENGTH),
      status: response.status,
    };
  }

  async #request<T>(
    method: string,
    path: string,
    body?: unknown,
    init: { headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<T> {
    const { body: bytes } = await this.#send(method, path, {
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...(init.signal ? { signal: init.signal } : {}),
    });
    const text = bytes.toString('utf8');
    try {
      return (text ? JSON.parse(text) : undefined) as T;
    } catch {
      return undefined as T;
    }
  }

  async infer(model: string, inputs: ClientTensor[], options: InferOptions = {}): Promise<InferResponse> {
    const path = options.version
      ? `/v2/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(options.version)}/infer`
      : `/v2/models/${encodeURIComponent(model)}/infer`;
    const request = encodeInferRequest(inputs, options);
    const response = await this.#send('POST', path, {
      body: request.body,
      headers: {
        ...request.headers,
        ...(options.timeoutMs ? { 'infergrid-timeout-ms': String(options.timeoutMs) } : {}),
      },
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return decodeInferResponse(response.body, response.headerLength, response.status);
  }

  modelMetadata(
    model: string,
  ): Promise<{ name: string; versions: string[]; platform: string; inputs: unknown[]; outputs: unknown[] }> {
    return this.#request('GET', `/v2/models/${encodeURIComponent(model)}`);
  }

  async modelReady(model: string): Promise<boolean> {
    try {
      await this.#request('GET', `/v2/models/${encodeURIComponent(model)}/ready`);
      return true;
    } catch (err) {
      if (err instanceof InferenceClientError && err.status === 503) return false;
      throw err;
    }
  }

  async serverReady(): Promise<boolean> {
    try {
      await this.#request('GET', '/v2/health/ready');
      return true;
    } catch (err) {
      if (err instanceof InferenceClientError && err.status === 503) return false;
      throw err;
    }
  }
}
