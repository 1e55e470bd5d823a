/**
 * Tensor plumbing shared by the `ocr-line` steps: checking the inputs a step receives (every
 * problem a client could cause becomes INVALID_ARGUMENT naming the input) and building outputs.
 */

import { InfergridError } from '../../../src/errors.ts';
import {
  decodeBytesElements,
  describeTensor,
  ELEMENT_BYTES,
  elementCount,
  encodeBytesElements,
  type Tensor,
  type TensorSpec,
  typedView,
} from '../../../src/tensor/index.ts';

/** A client's bad input: never retried, never held against the worker. */
export function invalidArgument(message: string, details?: Record<string, unknown>): InfergridError {
  return new InfergridError('INVALID_ARGUMENT', message, details === undefined ? {} : { details });
}

/**
 * Picks a step's inputs by name, checking that each declared input came exactly once, nothing
 * else came, and each has the declared datatype, rank, fixed dimensions and (numeric) byte length.
 *
 * @param step the step's name, for messages ("ocr prepare step")
 * @throws {InfergridError} INVALID_ARGUMENT naming the first problem
 */
export function pickInputs(
  step: string,
  inputs: readonly Tensor[],
  specs: readonly TensorSpec[],
): Record<string, Tensor> {
  const takes = specs.map((s) => `"${s.name}" ${describeTensor(s.datatype, s.shape)}`).join(' and ');
  const picked: Record<string, Tensor> = {};
  for (const t of inputs) {
    const spec = specs.find((s) => s.name === t?.name);
    if (!spec) throw invalidArgument(`unexpected input "${String(t?.name)}"; the ${step} takes ${takes}`);
    if (Object.hasOwn(picked, spec.name)) throw invalidArgument(`input "${spec.name}" was given twice`);
    checkTensor(t, spec);
    picked[spec.name] = t;
  }
  const missing = specs.filter((s) => !Object.hasOwn(picked, s.name));
  if (missing.length > 0) {
    throw invalidArgument(
      `missing input${missing.length > 1 ? 's' : ''} ${missing.map((s) => `"${s.name}"`).join(', ')}; the ${step} takes ${takes}`,
    );
  }
  return picked;
}

function checkTensor(t: Tensor, spec: TensorSpec): void {
  const shapeOk =
    Array.isArray(t.shape) &&
    t.shape.length === spec.shape.length &&
    t.shape.every((d, i) => Number.isInteger(d) && d >= 0 && (spec.shape[i] === -1 || spec.shape[i] === d));
  if (t.datatype !== spec.datatype || !shapeOk) {
    throw invalidArgument(
      `input "${spec.name}": expected ${describeTensor(spec.datatype, spec.shape)}, got ${describeTensor(t.datatype, Array.isArray(t.shape) ? t.shape : [])}`,
      { input: spec.name },
    );
  }
  if (!(t.data instanceof Uint8Array)) {
    throw invalidArgument(`input "${spec.name}": data is not raw bytes`, { input: spec.name });
  }
  if (t.datatype !== 'BYTES') {
    const expected = ELEMENT_BYTES[t.datatype] * elementCount(t.shape);
    if (t.data.byteLength !== expected) {
      throw invalidArgument(
        `input "${spec.name}": ${describeTensor(t.datatype, t.shape)} needs ${expected} bytes, got ${t.data.byteLength}`,
        { input: spec.name },
      );
    }
  }
}

/**
 * The elements of a BYTES [N] tensor (checked by {@link pickInputs}) as Buffers viewing its data.
 *
 * @throws {InfergridError} INVALID_ARGUMENT: broken length prefixes, or not exactly N elements
 */
export function readBytesElements(t: Tensor): Buffer[] {
  const elements = decodeBytesElements(t.data, `input "${t.name}"`);
  if (elements.length !== t.shape[0]) {
    throw invalidArgument(
      `input "${t.name}": shape [${t.shape.join(',')}] says ${t.shape[0]} elements but the data holds ${elements.length}`,
      { input: t.name },
    );
  }
  return elements.map((e) => Buffer.from(e.buffer, e.byteOffset, e.byteLength));
}

/** The values of an FP32 tensor (checked by {@link pickInputs}), a view where alignment allows. */
export function readFp32(t: Tensor): Float32Array {
  return typedView('FP32', t.data) as Float32Array;
}

export function fp32Tensor(name: string, shape: number[], values: Float32Array): Tensor {
  return {
    name,
    datatype: 'FP32',
    shape,
    data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

export function int32Tensor(name: string, shape: number[], values: Int32Array): Tensor {
  return {
    name,
    datatype: 'INT32',
    shape,
    data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

/** A BYTES [N] tensor of UTF-8 strings. */
export function stringsTensor(name: string, values: readonly string[]): Tensor {
  return {
    name,
    datatype: 'BYTES',
    shape: [values.length],
    data: encodeBytesElements(values.map((v) => Buffer.from(v, 'utf8'))),
  };
}

/** A BYTES [N] tensor of raw byte strings (e.g. encoded images). */
export function bytesTensor(name: string, values: readonly Uint8Array[]): Tensor {
  return { name, datatype: 'BYTES', shape: [values.length], data: encodeBytesElements(values) };
}
