/**
 * The limits on what one inference request may hold (`coordinator.limits`), checked the same
 * way for every front door. A front door calls `checkRequestShape` as soon as it knows the
 * tensors' names and shapes, before it decodes any data (so a hostile body costs no more than
 * its parse); the coordinator's entry point checks every client request again, with each BYTES
 * element's size (`checkBytesTensor`), so a front door that forgets cannot let one through.
 */

import type { RequestLimits } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { Tensor } from '../tensor/index.ts';

function tooMuch(message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', message);
}

/** The request's inputs, id and element counts against the limits (shapes only, no data). */
export function checkRequestShape(
  limits: RequestLimits,
  inputs: readonly { name: string; datatype: string; shape: readonly number[] }[],
  id: string | undefined,
): void {
  if (inputs.length > limits.maxInputs)
    tooMuch(
      `the request has ${inputs.length} inputs; at most ${limits.maxInputs} (coordinator.limits.maxInputs)`,
    );
  if (id !== undefined && id.length > limits.maxIdLength)
    tooMuch(
      `"id" is ${id.length} characters; at most ${limits.maxIdLength} (coordinator.limits.maxIdLength)`,
    );
  let elements = 0;
  let bytesElements = 0;
  for (const input of inputs) {
    let n = 1;
    for (const d of input.shape) n *= d;
    elements += n;
    if (input.datatype === 'BYTES') bytesElements += n;
  }
  if (elements > limits.maxElements)
    tooMuch(
      `the request's tensors hold ${elements} elements; at most ${limits.maxElements} (coordinator.limits.maxElements)`,
    );
  if (bytesElements > limits.maxBytesElements)
    tooMuch(
      `the request's BYTES tensors hold ${bytesElements} elements; at most ${limits.maxBytesElements} (coordinator.limits.maxBytesElements)`,
    );
}

/** Each element of a BYTES tensor (length-prefixed, as tensors carry them) against the size limit. */
export function checkBytesTensor(limits: RequestLimits, tensor: Tensor): void {
  const { data } = tensor;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let index = 0;
  // the data was decoded and counted already: every prefix is in bounds
  for (let offset = 0; offset + 4 <= data.byteLength; index++) {
    const bytes = view.getUint32(offset, true);
    if (bytes > limits.maxBytesElementBytes)
      tooMuch(
        `input "${tensor.name}": BYTES element ${index} is ${bytes} bytes; at most ${limits.maxBytesElementBytes} (coordinator.limits.maxBytesElementBytes)`,
      );
    offset += 4 + bytes;
  }
}
