/**
 * KServe v2 JSON tensors <-> raw tensors. This is the only place numbers are read from or
 * written to JSON arrays; it checks every element so a bad one is reported with its index.
 */

import { InfergridError } from '../errors.ts';
import { encodeBytesElements, decodeBytesElements } from './bytes-elements.ts';
import {
  type Datatype,
  type NumericArray,
  TYPED_ARRAY,
  bytesOf,
  elementCount,
  typedView,
} from './datatypes.ts';
import { fromHalfBits, toHalfBits } from './fp16.ts';
import type { Tensor } from './tensor.ts';

const INT_RANGE: Partial<Record<Datatype, readonly [number, number]>> = {
  UINT8: [0, 0xff],
  UINT16: [0, 0xffff],
  UINT32: [0, 0xffffffff],
  INT8: [-0x80, 0x7f],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** Most dimensions a tensor may have (ONNX and Triton allow far fewer in practice). */
export const MAX_TENSOR_RANK = 64;

/**
 * Number of leaves (non-array values) in nested arrays; 1 for a scalar. Arrays may nest at most
 * `maxDepth` levels (KServe data is flat or nested; how it nests need not follow the shape), so a
 * hostile body nested thousands deep is refused before any walk could overflow the stack.
 */
function countLeaves(name: string, node: unknown, maxDepth: number): number {
  if (!Array.isArray(node)) return 1;
  if (maxDepth <= 0)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `input "${name}": data is nested more than ${MAX_TENSOR_RANK} levels deep`,
    );
  let n = 0;
  for (const item of node) n += Array.isArray(item) ? countLeaves(name, item, maxDepth - 1) : 1;
  return n;
}

/** The elements of (possibly nested) JSON `data` in row-major order, nested at most MAX_TENSOR_RANK deep. */
export function flattenJsonData(name: string, data: unknown): unknown[] {
  countLeaves(name, data, MAX_TENSOR_RANK);
  const out: unknown[] = [];
  forEachLeaf(data, (v) => out.push(v));
  return out;
}

/** Calls visit(leaf, index) for every leaf in row-major order, without building a flat copy. */
function forEachLeaf(node: unknown, visit: (value: unknown, index: number) => void): void {
  walkLeaves(node, visit, 0);
}

/** forEachLeaf's walk from `index`; returns the index after the last leaf. */
function walkLeaves(node: unknown, visit: (value: unknown, index: number) => void, index: number): number {
  if (!Array.isArray(node)) {
    visit(node, index);
    return index + 1;
  }
  let next = index;
  for (const item of node) next = walkLeaves(item, visit, next);
  return next;
}

function badElement(
  name: string,
  index: number,
  value: unknown,
  expected: string,
  datatype: Datatype,
): never {
  const shown = JSON.stringify(value);
  throw new InfergridError(
    'INVALID_ARGUMENT',
    `input "${name}": element ${index} is ${shown === undefined ? String(value) : shown}, expected ${expected} for ${datatype}`,
  );
}

/**
 * Builds a raw tensor from a JSON tensor's flat or nested `data`. The caller has already
 * checked name, datatype and shape against the model; this checks the element count and
 * every element's type and range.
 */
export function tensorFromJson(name: string, datatype: Datatype, shape: number[], data: unknown): Tensor {
  const expected = elementCount(shape);
  const given = countLeaves(name, data, MAX_TENSOR_RANK);
  if (given !== expected) {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `input "${name}": shape [${shape.join(',')}] needs ${expected} elements, got ${given}`,
    );
  }
  if (datatype === 'BYTES') {
    const elements: Uint8Array[] = [];
    forEachLeaf(data, (v, i) => {
      if (typeof v !== 'string') badElement(name, i, v, 'a string', datatype);
      elements.push(Buffer.from(v, 'utf8'));
    });
    return { name, datatype, shape, data: encodeBytesElements(elements) };
  }
  // elements go straight into the typed array: no intermediate flat copy of a big tensor
  const array = new TYPED_ARRAY[datatype](expected);
  if (datatype === 'BOOL') {
    forEachLeaf(data, (v, i) => {
      if (typeof v !== 'boolean') badElement(name, i, v, 'true or false', datatype);
      array[i] = v ? 1 : 0;
    });
  } else if (datatype === 'FP16') {
    forEachLeaf(data, (v, i) => {
      if (typeof v !== 'number') badElement(name, i, v, 'a number', datatype);
      array[i] = toHalfBits(v);
    });
  } else if (datatype === 'FP32' || datatype === 'FP64') {
    forEachLeaf(data, (v, i) => {
      if (typeof v !== 'number') badElement(name, i, v, 'a number', datatype);
      array[i] = v;
    });
  } else {
    const [min, max] = INT_RANGE[datatype]!;
    const big = datatype === 'INT64' || datatype === 'UINT64';
    forEachLeaf(data, (v, i) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
        badElement(name, i, v, `an integer in [${min}, ${max}]`, datatype);
      }
      array[i] = big ? BigInt(v) : v;
    });
  }
  return { name, datatype, shape, data: bytesOf(array) };
}

/** A raw tensor's elements as a flat JSON array (KServe v2 responses use flat `data`). */
export function tensorToJsonData(tensor: Tensor): unknown[] {
  const { datatype, data } = tensor;
  if (datatype === 'BYTES') {
    return decodeBytesElements(data, `output "${tensor.name}"`).map((e) => Buffer.from(e).toString('utf8'));
  }
  const view: NumericArray = typedView(datatype, data);
  if (datatype === 'BOOL') return Array.from(view as Uint8Array, (v) => v !== 0);
  if (datatype === 'FP16') return Array.from(view as Uint16Array, fromHalfBits);
  if (datatype === 'INT64' || datatype === 'UINT64') return Array.from(view as BigInt64Array, Number);
  return Array.from(view as Float32Array);
}
