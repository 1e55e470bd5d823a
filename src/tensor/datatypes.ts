/**
 * KServe v2 datatypes and how each is laid out as raw little-endian bytes.
 * BYTES elements are laid out as Triton's binary extension does: a 4-byte little-endian
 * length, then that many bytes, for each element in row-major order.
 */

export const DATATYPES = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
] as const;

export type Datatype = (typeof DATATYPES)[number];

const DATATYPE_SET: ReadonlySet<string> = new Set(DATATYPES);

export function isDatatype(value: unknown): value is Datatype {
  return typeof value === 'string' && DATATYPE_SET.has(value);
}

/** Bytes per element; 0 for BYTES (variable length). */
export const ELEMENT_BYTES: Readonly<Record<Datatype, number>> = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  FP32: 4,
  FP64: 8,
  BYTES: 0,
};

export type NumericArray =
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Float32Array
  | Float64Array;

type TypedArrayCtor = {
  new (length: number): NumericArray;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): NumericArray;
  readonly BYTES_PER_ELEMENT: number;
};

/** The typed array that holds a datatype's raw elements (FP16 as its uint16 bit patterns). */
export const TYPED_ARRAY: Readonly<Record<Exclude<Datatype, 'BYTES'>, TypedArrayCtor>> = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP16: Uint16Array,
  FP32: Float32Array,
  FP64: Float64Array,
};

/** Number of elements a shape holds. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** "FP32 [1,3,48,-1]" — how shapes are written in error messages. */
export function describeTensor(datatype: string, shape: readonly number[]): string {
  return `${datatype} [${shape.join(',')}]`;
}

/**
 * A typed-array view over raw bytes without copying when the bytes are aligned for the
 * element type; otherwise an aligned copy (typed arrays cannot start at an unaligned offset).
 */
export function typedView(datatype: Exclude<Datatype, 'BYTES'>, bytes: Uint8Array): NumericArray {
  const Ctor = TYPED_ARRAY[datatype];
  const size = Ctor.BYTES_PER_ELEMENT;
  const length = Math.floor(bytes.byteLength / size);
  if (bytes.byteOffset % size === 0) return new Ctor(bytes.buffer, bytes.byteOffset, length);
  const copy = new Uint8Array(length * size);
  copy.set(bytes.subarray(0, length * size));
  return new Ctor(copy.buffer, 0, length);
}

/** The raw bytes under a typed array, without copying. */
export function bytesOf(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
