import type { Datatype } from './datatypes.ts';

/**
 * A tensor as it moves through the engine: raw little-endian bytes with a datatype and a
 * shape. JSON arrays exist only at the HTTP edge; everything between the HTTP body and the
 * backend carries `data` as bytes, and views of it rather than copies where it can.
 */
export interface Tensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  /** Raw row-major little-endian element bytes; BYTES elements length-prefixed (see bytes-elements.ts). */
  data: Uint8Array;
}

/** A tensor's name, datatype and shape as a model declares them; −1 marks a variable dimension. */
export interface TensorSpec {
  name: string;
  datatype: Datatype;
  shape: number[];
}
