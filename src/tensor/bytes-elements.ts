/**
 * BYTES tensors as raw bytes: each element is a 4-byte little-endian length followed by the
 * element's bytes (Triton's binary tensor layout), so BYTES travel like every other tensor.
 */

import { InfergridError } from '../errors.ts';
import type { Tensor } from './tensor.ts';

export function encodeBytesElements(elements: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const e of elements) total += 4 + e.byteLength;
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const e of elements) {
    out.writeUInt32LE(e.byteLength, offset);
    out.set(e, offset + 4);
    offset += 4 + e.byteLength;
  }
  return out;
}

/** Splits raw BYTES data into its elements (views, not copies). Throws if the layout is broken. */
export function decodeBytesElements(
  data: Uint8Array,
  name = 'tensor',
  maxCount = Number.POSITIVE_INFINITY,
): Uint8Array[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: Uint8Array[] = [];
  let offset = 0;
  while (offset < data.byteLength) {
    // a peer's data never makes more element views than the shape it declared
    if (out.length >= maxCount)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `${name}: BYTES data holds more than ${maxCount} elements`,
        {
          details: { tooMany: true },
        },
      );
    if (offset + 4 > data.byteLength) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `${name}: BYTES data ends inside an element's length prefix`,
      );
    }
    const length = view.getUint32(offset, true);
    offset += 4;
    if (offset + length > data.byteLength) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `${name}: BYTES element ${out.length} says ${length} bytes but only ${data.byteLength - offset} remain`,
      );
    }
    out.push(data.subarray(offset, offset + length));
    offset += length;
  }
  return out;
}

/** A one-element BYTES tensor holding `text` as UTF-8 (an LLM's prompt or output). */
export function textTensor(name: string, text: string): Tensor {
  return { name, datatype: 'BYTES', shape: [1], data: encodeBytesElements([Buffer.from(text, 'utf8')]) };
}
