/**
 * Triton's classification extension, for every front door: an output requested with
 * `classification: N` (Triton's parameter name; `class_count` is taken too) is answered not
 * with the model's tensor but with a BYTES tensor of its N highest-valued classes,
 * "<value>:<index>[:<label>]" each, shape [batch, N] for a model that batches, [N] otherwise.
 *
 * Trade-off: it is applied to the result after the response cache, so the cache holds the
 * model's own output once and serves it to requests with any count or none (the cache key
 * need not carry the count); the top-N costs a sort of one output per request, even on a hit.
 * Labels files are read by the coordinator, once per model config, and kept while it serves.
 */

import { open } from 'node:fs/promises';
import type { ModelConfig, ModelPaths } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { Parameters } from '../protocol/index.ts';
import type { ModelSchema } from '../registry/index.ts';
import {
  DATATYPES,
  type Datatype,
  type Tensor,
  type TensorSpec,
  elementCount,
  encodeBytesElements,
  fromHalfBits,
  typedView,
} from '../tensor/index.ts';

/** The output parameter asking for classes (Triton's name, sent by tritonclient's class_count). */
export const CLASSIFICATION_PARAMETER = 'classification';
/** Also taken: the name tritonclient's own argument has. */
export const CLASS_COUNT_PARAMETER = 'class_count';
/** Largest class count a request may ask for. */
export const MAX_CLASS_COUNT = 65_536;
/** Largest labels file read, bytes. */
export const MAX_LABELS_FILE_BYTES = 4 * 1024 * 1024;

/** The datatypes whose elements are numbers: every one but BOOL and BYTES. */
const NUMERIC: ReadonlySet<Datatype> = new Set(DATATYPES.filter((d) => d !== 'BOOL' && d !== 'BYTES'));

/**
 * The class count an output's parameters ask for, or undefined. INVALID_ARGUMENT for a count
 * that is not an integer from 1 to MAX_CLASS_COUNT, or two names that disagree. Front doors call
 * it and put the count in InferenceRequest.classification.
 */
export function classCountOf(parameters: Parameters | undefined, output: string): number | undefined {
  const a = parameters?.[CLASSIFICATION_PARAMETER];
  const b = parameters?.[CLASS_COUNT_PARAMETER];
  if (a !== undefined && b !== undefined && a !== b)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `output "${output}": parameters "${CLASSIFICATION_PARAMETER}" (${JSON.stringify(a)}) and "${CLASS_COUNT_PARAMETER}" (${JSON.stringify(b)}) disagree; give one`,
    );
  const value = a ?? b;
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_CLASS_COUNT)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `output "${output}": class count must be an integer from 1 to ${MAX_CLASS_COUNT}, got ${JSON.stringify(value)}`,
    );
  return value;
}

/** Checks a request's classifications against the model: each output exists and is numeric. */
export function checkClassification(
  model: ModelSchema,
  classification: ReadonlyMap<string, number>,
  outputs: readonly string[] | undefined,
): void {
  for (const name of classification.keys()) {
    const spec = model.outputs.find((o) => o.name === name);
    if (!spec)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${model.name}": classification asked for output "${name}", which the model does not have; its outputs: ${model.outputs.map((o) => `"${o.name}"`).join(', ')}`,
      );
    if (!NUMERIC.has(spec.datatype))
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${model.name}": output "${name}" is ${spec.datatype}; classification needs a numeric output`,
      );
    if (outputs !== undefined && !outputs.includes(name))
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${model.name}": classification asked for output "${name}", which the request does not ask for`,
      );
  }
}

/** Reads element i of a numeric tensor as a number or bigint, in a form that compares by value. */
function reader(tensor: Tensor): (i: number) => number | bigint {
  const datatype = tensor.datatype as Exclude<Datatype, 'BYTES'>;
  const view = typedView(datatype, tensor.data);
  if (datatype === 'FP16') return (i) => fromHalfBits(view[i] as number);
  return (i) => view[i]!;
}

/** Triton writes values as C++'s std::to_string does: floats with 6 decimals, integers whole. */
function formatValue(value: number | bigint, datatype: Datatype): string {
  if (typeof value === 'bigint') return value.toString();
  if (datatype === 'FP16' || datatype === 'FP32' || datatype === 'FP64') {
    if (Number.isNaN(value)) return 'nan';
    if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
    return value.toFixed(6);
  }
  return String(value);
}

/**
 * The top `count` classes of a numeric tensor, as a BYTES tensor of the same name. `batched`:
 * the first dimension is the batch, classes are taken per batch item over the rest (shape
 * [batch, n]); else over the whole tensor (shape [n]). n is `count`, or fewer when there are
 * fewer classes. Ties go to the lower index. Labels: line i names class i; a class past the
 * end, or on an empty line, has none.
 */
export function classify(
  tensor: Tensor,
  count: number,
  batched: boolean,
  labels: readonly string[] | undefined,
): Tensor {
  const total = elementCount(tensor.shape);
  const rows = batched && tensor.shape.length > 0 ? tensor.shape[0]! : 1;
  const perRow = rows === 0 ? 0 : total / rows;
  const n = Math.min(count, perRow);
  const read = reader(tensor);
  const elements: Uint8Array[] = [];
  const order = Array.from({ length: perRow }, (_, i) => i);
  for (let r = 0; r < rows; r++) {
    const base = r * perRow;
    const value = (i: number) => read(base + i);
    // NaN sorts last; equal values keep the lower index first
    order.sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      const na = typeof va === 'number' && Number.isNaN(va);
      const nb = typeof vb === 'number' && Number.isNaN(vb);
      if (na || nb) return na === nb ? a - b : na ? 1 : -1;
      return va > vb ? -1 : va < vb ? 1 : a - b;
    });
    for (let k = 0; k < n; k++) {
      const index = order[k]!;
      const label = labels?.[index];
      const text = `${formatValue(value(index), tensor.datatype)}:${index}${label ? `:${label}` : ''}`;
      elements.push(Buffer.from(text, 'utf8'));
    }
    order.sort((a, b) => a - b);
  }
  return {
    name: tensor.name,
    datatype: 'BYTES',
    shape: batched ? [rows, n] : [n],
    data: encodeBytesElements(elements),
  };
}

/** One label per line; a trailing empty line (the file's last newline) is not a label. */
export function parseLabels(text: string): string[] {
  const lines = text.split(/\r?\n/);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/**
 * Labels files, read once per model config (a reload with another config reads them again) and
 * kept while that config is referenced. A file that cannot be read fails the request with
 * CONFIG_INVALID (the operator's to fix) and is tried again by the next one.
 */
export class LabelFiles {
  readonly #paths: ModelPaths;
  readonly #read = new WeakMap<ModelConfig, Map<string, Promise<string[]>>>();

  constructor(paths: ModelPaths) {
    this.#paths = paths;
  }

  /** The labels of `output`, or undefined when the config names no file for it. */
  labels(config: ModelConfig | undefined, output: string): Promise<string[]> | undefined {
    const file = config?.labels?.[output];
    if (!config || file === undefined) return undefined;
    let files = this.#read.get(config);
    if (!files) {
      files = new Map();
      this.#read.set(config, files);
    }
    let labels = files.get(output);
    if (!labels) {
      labels = this.#load(config.name, output, file);
      files.set(output, labels);
      labels.catch(() => files.delete(output));
    }
    return labels;
  }

  async #load(model: string, output: string, file: string): Promise<string[]> {
    const located = this.#paths.locate(file);
    const fail = (why: string): never => {
      throw new InfergridError(
        'CONFIG_INVALID',
        `model "${model}": labels file of output "${output}" ${why}`,
      );
    };
    if (located.state === 'outside') fail('is outside the repository roots');
    if (located.state !== 'found') fail(`was not found: ${file}`);
    const path = (located as { path: string }).path;
    let handle: Awaited<ReturnType<typeof open>> | undefined;
    try {
      handle = await open(path, 'r');
      const { size } = await handle.stat();
      if (size > MAX_LABELS_FILE_BYTES)
        fail(`has ${size} bytes; at most ${MAX_LABELS_FILE_BYTES} are read (one label per line)`);
      return parseLabels(await handle.readFile('utf8'));
    } catch (err) {
      if (err instanceof InfergridError) throw err;
      return fail(`could not be read: ${(err as Error).message}`);
    } finally {
      await handle?.close();
    }
  }
}

/** Whether an output's first dimension is the batch (Triton's [batch, N] answer). */
export function isBatchedOutput(model: ModelSchema, spec: TensorSpec | undefined): boolean {
  return model.batchable && spec?.shape[0] === -1;
}

/**
 * The outputs with each classified output replaced by its classes. Outputs the request
 * classifies that the model did not return are left out, as any output it did not return.
 */
export async function applyClassification(
  outputs: readonly Tensor[],
  classification: ReadonlyMap<string, number>,
  model: ModelSchema,
  config: ModelConfig | undefined,
  labelFiles: LabelFiles,
): Promise<Tensor[]> {
  return Promise.all(
    outputs.map(async (tensor) => {
      const count = classification.get(tensor.name);
      if (count === undefined) return tensor;
      if (!NUMERIC.has(tensor.datatype))
        throw new InfergridError(
          'BACKEND_ERROR',
          `model "${model.name}" returned output "${tensor.name}" as ${tensor.datatype}; classification needs a numeric output`,
        );
      const labels = await labelFiles.labels(config, tensor.name);
      const spec = model.outputs.find((o) => o.name === tensor.name);
      return classify(tensor, count, isBatchedOutput(model, spec), labels);
    }),
  );
}
