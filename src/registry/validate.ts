/**
 * Checks a request's tensors against a model's schema before any data is converted or sent.
 * Used by the coordinator (so bad input never leaves it) and again by the worker (so a bad
 * request from any peer fails cleanly instead of inside the backend).
 */

import { InfergridError } from '../errors.ts';
import { type TensorSpec, describeTensor } from '../tensor/index.ts';

/** What validation needs to know about a model. */
export interface ModelSchema {
  name: string;
  inputs: readonly TensorSpec[];
  outputs: readonly TensorSpec[];
  batchable: boolean;
  /** Largest first dimension; 0 for no limit. */
  maxBatchSize: number;
}

export interface TensorDescriptor {
  name: string;
  datatype: string;
  shape: readonly number[];
}

function describeInputs(model: ModelSchema): string {
  return model.inputs.map((s) => `"${s.name}" ${describeTensor(s.datatype, s.shape)}`).join(', ');
}

function shapeMatches(spec: readonly number[], shape: readonly number[]): boolean {
  return spec.length === shape.length && spec.every((d, i) => d === -1 || d === shape[i]);
}

function bad(model: ModelSchema, message: string): never {
  throw new InfergridError('INVALID_ARGUMENT', `model "${model.name}": ${message}`);
}

/** Throws INVALID_ARGUMENT naming the first problem: what was expected and what came. */
export function validateInputs(
  model: ModelSchema,
  inputs: readonly TensorDescriptor[],
  outputs?: readonly string[],
): void {
  const seen = new Set<string>();
  for (const input of inputs) {
    const spec = model.inputs.find((s) => s.name === input.name);
    if (!spec) bad(model, `unknown input "${input.name}"; the model takes ${describeInputs(model)}`);
    if (seen.has(input.name)) bad(model, `input "${input.name}" is given twice`);
    seen.add(input.name);
    const shapeOk = Array.isArray(input.shape) && input.shape.every((d) => Number.isInteger(d) && d >= 0);
    if (!shapeOk)
      bad(
        model,
        `input "${input.name}": shape must be a list of non-negative integers, got ${JSON.stringify(input.shape)}`,
      );
    if (input.datatype !== spec!.datatype || !shapeMatches(spec!.shape, input.shape)) {
      bad(
        model,
        `input "${input.name}": expected ${describeTensor(spec!.datatype, spec!.shape)}, got ${describeTensor(input.datatype, input.shape)}`,
      );
    }
    if (model.batchable && model.maxBatchSize > 0 && (input.shape[0] ?? 0) > model.maxBatchSize) {
      bad(
        model,
        `input "${input.name}": batch of ${input.shape[0]} is over the model's maxBatchSize ${model.maxBatchSize}; split the request`,
      );
    }
  }
  const missing = model.inputs.filter((s) => !seen.has(s.name));
  if (missing.length > 0) {
    bad(
      model,
      `missing input${missing.length > 1 ? 's' : ''} ${missing.map((s) => `"${s.name}" ${describeTensor(s.datatype, s.shape)}`).join(', ')}`,
    );
  }
  if (model.batchable && inputs.length > 1) {
    const batch = inputs[0]!.shape[0];
    const other = inputs.find((t) => t.shape[0] !== batch);
    if (other)
      bad(
        model,
        `inputs disagree on the batch size: "${inputs[0]!.name}" has ${batch}, "${other.name}" has ${other.shape[0]}`,
      );
  }
  for (const name of outputs ?? []) {
    if (!model.outputs.some((s) => s.name === name)) {
      bad(
        model,
        `unknown output "${name}"; the model has outputs ${model.outputs.map((s) => `"${s.name}"`).join(', ')}`,
      );
    }
  }
}
