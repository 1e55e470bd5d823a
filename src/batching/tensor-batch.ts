/**
 * Joining requests into one batch and splitting the batch's outputs back, exactly: inputs are
 * concatenated along the first (batch) dimension, and each request gets back the rows of every
 * output that belong to it, in order. BYTES tensors are split by element count, other tensors
 * by bytes.
 */

import { InfergridError } from '../errors.ts';
import {
  ELEMENT_BYTES,
  type Tensor,
  decodeBytesElements,
  elementCount,
  encodeBytesElements,
} from '../tensor/index.ts';

/** The batch dimension of a request: the first dimension of its first input (1 for scalars). */
export function batchSizeOf(inputs: readonly Tensor[]): number {
  return inputs[0]?.shape[0] ?? 1;
}

/**
 * A key that is equal for requests that may share a batch: same input names, datatypes and
 * non-batch dimensions, same requested outputs and same model parameters. Requests whose
 * variable dimensions differ (two widths of an image) land in different groups: they are
 * bucketed, never padded, so batching can never change a request's own result.
 */
export function compatibilityKey(
  inputs: readonly Tensor[],
  outputs: readonly string[] | undefined,
  parameters: string,
): string {
  let key = '';
  for (const t of inputs) key += `${t.name}:${t.datatype}:${t.shape.slice(1).join('x')};`;
  return `${key}|${outputs?.join(',') ?? '*'}|${parameters}`;
}

/** Concatenates the requests' inputs along the first dimension (inputs matched by name). */
export function concatInputs(requests: readonly (readonly Tensor[])[]): Tensor[] {
  const first = requests[0]!;
  if (requests.length === 1) return [...first];
  return first.map((template) => {
    const parts: Uint8Array[] = [];
    let rows = 0;
    for (const inputs of requests) {
      const t = inputs.find((x) => x.name === template.name)!;
      parts.push(t.data);
      rows += t.shape[0] ?? 1;
    }
    // BYTES elements are self-delimiting, so their raw layouts concatenate like any other
    const data = Buffer.concat(parts);
    return {
      name: template.name,
      datatype: template.datatype,
      shape: [rows, ...template.shape.slice(1)],
      data,
    };
  });
}

/**
 * Splits each output of a batch into per-request tensors, by the requests' batch sizes in
 * order. Fails with BACKEND_ERROR when an output's first dimension is not the batch's total.
 */
export function splitOutputs(outputs: readonly Tensor[], sizes: readonly number[]): Tensor[][] {
  const total = sizes.reduce((a, b) => a + b, 0);
  const perRequest: Tensor[][] = sizes.map(() => []);
  for (const out of outputs) {
    if (sizes.length === 1) {
      perRequest[0]!.push(out);
      continue;
    }
    if (out.shape[0] !== total) {
      throw new InfergridError(
        'BACKEND_ERROR',
        `output "${out.name}" has first dimension ${out.shape[0]}, but the batch has ${total} rows; the model is not batchable (set batchable: false)`,
      );
    }
    const rowShape = out.shape.slice(1);
    const perRow = elementCount(rowShape);
    if (out.datatype === 'BYTES') {
      const elements = decodeBytesElements(out.data, `output "${out.name}"`);
      let at = 0;
      sizes.forEach((rows, i) => {
        const count = rows * perRow;
        perRequest[i]!.push({
          ...out,
          shape: [rows, ...rowShape],
          data: encodeBytesElements(elements.slice(at, at + count)),
        });
        at += count;
      });
    } else {
      const rowBytes = perRow * ELEMENT_BYTES[out.datatype];
      let offset = 0;
      sizes.forEach((rows, i) => {
        const bytes = rows * rowBytes;
        // views of the batch output, not copies: the frame encoder writes them as they are
        perRequest[i]!.push({
          ...out,
          shape: [rows, ...rowShape],
          data: out.data.subarray(offset, offset + bytes),
        });
        offset += bytes;
      });
    }
  }
  return perRequest;
}
