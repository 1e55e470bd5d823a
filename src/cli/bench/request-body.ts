/**
 * The one request body a bench run sends, encoded once before the run: generated from the
 * model's metadata, a KServe v2 JSON body from a file, or a binary file (an image, say) as the
 * model's BYTES input. The same bytes every time, like perf_analyzer; a model with a response
 * cache therefore answers from the cache after the first request.
 */

import { readFile } from 'node:fs/promises';
import { type ClientTensor, encodeInferRequest } from '../../client/index.ts';
import { InfergridError } from '../../errors.ts';
import type { CacheUse, GeneratedData } from './options.ts';
import type { ModelMetadata } from './target.ts';

export interface BodyDescription {
  /** generated from metadata, a JSON body file, or a binary file as the BYTES input */
  source: 'generated' | 'json-file' | 'binary-file';
  file?: string;
  /** How tensors travel: JSON `data`, or binary tensor data (some inputs, or all). */
  encoding: 'json' | 'binary';
  bytes: number;
  inputs: { name: string; datatype: string; shape: number[] }[];
}

export interface PreparedBody {
  body: Buffer;
  headers: Record<string, string>;
  description: BodyDescription;
}

export interface BodyOptions {
  inputFile: string | undefined;
  binary: boolean;
  shapes: ReadonlyMap<string, number[]>;
  data: GeneratedData;
  cache: CacheUse;
}

type Parameters = Record<string, string | number | boolean>;

/** The request parameters bench adds: `cache: "bypass"` unless the cache is to be measured. */
function benchParameters(options: BodyOptions): Parameters {
  return options.cache === 'bypass' ? { cache: 'bypass' } : {};
}

type Spec = ModelMetadata['inputs'][number];

const describe = (t: { name: string; datatype: string; shape: number[] }): string =>
  `${t.name} ${t.datatype} [${t.shape.join(',')}]`;

function usage(message: string): InfergridError {
  return new InfergridError('CONFIG_INVALID', `${message}; see infergrid bench --help`);
}

/** mulberry32: a tiny seeded generator, so every run (and every machine) sends the same values. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The shape a generated input gets: the --shape override (checked against the model), else −1 → 1. */
function shapeFor(spec: Spec, shapes: ReadonlyMap<string, number[]>): number[] {
  const override = shapes.get(spec.name);
  if (!override) return spec.shape.map((d) => (d < 0 ? 1 : d));
  const fits =
    override.length === spec.shape.length &&
    override.every((d, i) => spec.shape[i]! < 0 || spec.shape[i] === d);
  if (!fits) {
    throw usage(
      `--shape ${spec.name}=${override.join(',')} does not fit the model's ${describe(spec)} (-1 is any size)`,
    );
  }
  return override;
}

function generatedData(
  datatype: string,
  count: number,
  kind: GeneratedData,
  seed: number,
): ClientTensor['data'] {
  const random = seededRandom(seed);
  const zero = kind === 'zero';
  switch (datatype) {
    case 'BOOL':
      return Array.from({ length: count }, () => !zero && random() < 0.5);
    case 'BYTES':
      // short printable strings: a text model's tokens, or at least valid UTF-8 for anyone
      return Array.from({ length: count }, () => (zero ? '0' : random().toString(36).slice(2, 10)));
    case 'FP16':
    case 'FP32':
    case 'FP64':
      // three decimals keep a JSON body short; the values only need to be ordinary numbers
      return Array.from({ length: count }, () => (zero ? 0 : Math.round(random() * 1000) / 1000));
    default:
      // every integer type holds 0..99, and small non-negative values are safe ids and indices
      return Array.from({ length: count }, () => (zero ? 0 : Math.floor(random() * 100)));
  }
}

function generated(spec: Spec, options: BodyOptions, seed: number): ClientTensor {
  const shape = shapeFor(spec, options.shapes);
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    name: spec.name,
    datatype: spec.datatype,
    shape,
    data: generatedData(spec.datatype, count, options.data, seed),
  };
}

function checkShapeNames(metadata: ModelMetadata, shapes: ReadonlyMap<string, number[]>): void {
  for (const name of shapes.keys()) {
    if (!metadata.inputs.some((s) => s.name === name)) {
      throw usage(
        `--shape names input "${name}", but model "${metadata.name}" has ${metadata.inputs.map(describe).join(', ') || 'no inputs'}`,
      );
    }
  }
}

function prepared(
  inputs: readonly ClientTensor[],
  binary: boolean,
  source: BodyDescription['source'],
  file: string | undefined,
  parameters: Parameters,
  outputs?: string[],
): PreparedBody {
  const { body, headers } = encodeInferRequest(inputs, {
    binary,
    ...(Object.keys(parameters).length > 0 ? { parameters } : {}),
    ...(outputs ? { outputs } : {}),
  });
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  return {
    body: bytes,
    headers,
    description: {
      source,
      ...(file === undefined ? {} : { file }),
      encoding: headers['content-type'] === 'application/json' ? 'json' : 'binary',
      bytes: bytes.byteLength,
      inputs: inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
    },
  };
}

interface JsonRequest {
  inputs: { name: string; datatype: string; shape: number[]; data?: unknown }[];
  outputs?: { name: string }[];
  parameters?: Record<string, unknown>;
}

/** A file's bytes as a KServe v2 JSON request, or undefined when they are not JSON at all. */
function asJsonRequest(file: string, bytes: Buffer): JsonRequest | undefined {
  const text = bytes.toString('utf8');
  if (!text.trimStart().startsWith('{')) {
    if (file.endsWith('.json')) throw usage(`--input ${file} is not a JSON object`);
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    if (file.endsWith('.json')) throw usage(`--input ${file} is not valid JSON: ${(err as Error).message}`);
    return undefined; // a binary file that happens to start with "{"
  }
  const inputs = (parsed as { inputs?: unknown }).inputs;
  if (!Array.isArray(inputs) || inputs.some((t) => typeof t !== 'object' || t === null)) {
    throw usage(`--input ${file} is JSON but not a KServe v2 request: it needs an "inputs" array`);
  }
  return parsed as JsonRequest;
}

function fromJsonFile(file: string, bytes: Buffer, request: JsonRequest, options: BodyOptions): PreparedBody {
  if (options.shapes.size > 0) throw usage(`--shape is for generated inputs; ${file} gives its own shapes`);
  const parameters = { ...benchParameters(options), ...request.parameters };
  if (!options.binary) {
    // sent as written, unless the cache parameter has to be added
    const body =
      request.parameters?.cache === undefined && parameters.cache !== undefined
        ? Buffer.from(JSON.stringify({ ...request, parameters }), 'utf8')
        : bytes;
    return {
      body,
      headers: { 'content-type': 'application/json' },
      description: {
        source: 'json-file',
        file,
        encoding: 'json',
        bytes: body.byteLength,
        inputs: request.inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
      },
    };
  }
  const inputs = request.inputs.map((t): ClientTensor => {
    if (!Array.isArray(t.data)) throw usage(`--input ${file}: input "${t.name}" has no "data" array`);
    return {
      name: t.name,
      datatype: t.datatype,
      shape: t.shape,
      data: t.data.flat(Number.POSITIVE_INFINITY),
    };
  });
  const scalars = Object.fromEntries(
    Object.entries(parameters).filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v)),
  ) as Parameters;
  try {
    return prepared(
      inputs,
      true,
      'json-file',
      file,
      scalars,
      request.outputs?.map((o) => o.name),
    );
  } catch (err) {
    throw usage(`--input ${file} cannot be sent as binary: ${(err as Error).message}`);
  }
}

function fromBinaryFile(
  file: string,
  bytes: Buffer,
  metadata: ModelMetadata,
  options: BodyOptions,
): PreparedBody {
  const byteInputs = metadata.inputs.filter((s) => s.datatype === 'BYTES');
  if (byteInputs.length !== 1) {
    throw usage(
      `--input ${file} is not a JSON request, so it is sent as the model's BYTES input, but model "${metadata.name}" has ${byteInputs.length === 0 ? 'none' : `${byteInputs.length} (${byteInputs.map((s) => s.name).join(', ')})`} (inputs: ${metadata.inputs.map(describe).join(', ')}); give a KServe v2 JSON request body instead`,
    );
  }
  const inputs = metadata.inputs.map((spec, i) => {
    if (spec.datatype !== 'BYTES') return generated(spec, options, i + 1);
    const shape = shapeFor(spec, options.shapes);
    const count = shape.reduce((a, b) => a * b, 1);
    return {
      name: spec.name,
      datatype: spec.datatype,
      shape,
      data: Array.from({ length: count }, () => bytes),
    };
  });
  return prepared(inputs, options.binary, 'binary-file', file, benchParameters(options));
}

export async function prepareRequestBody(
  metadata: ModelMetadata,
  options: BodyOptions,
): Promise<PreparedBody> {
  checkShapeNames(metadata, options.shapes);
  const file = options.inputFile;
  if (file === undefined) {
    const inputs = metadata.inputs.map((spec, i) => generated(spec, options, i + 1));
    return prepared(inputs, options.binary, 'generated', undefined, benchParameters(options));
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw usage(`--input ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  const request = asJsonRequest(file, bytes);
  return request
    ? fromJsonFile(file, bytes, request, options)
    : fromBinaryFile(file, bytes, metadata, options);
}
