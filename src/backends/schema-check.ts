import { InfergridError } from '../errors.ts';
import { type TensorSpec, describeTensor } from '../tensor/index.ts';

/**
 * Reconciles the schema a model's config declares with the one its backend reports. Names,
 * datatypes and ranks must agree; a dimension the model leaves variable (−1) may be declared
 * fixed, and then the declared (narrower) spec is the one requests are checked against.
 * Any disagreement is a MODEL_LOAD_FAILED naming both sides.
 */
export function reconcileSpecs(
  model: string,
  kind: 'input' | 'output',
  reported: readonly TensorSpec[],
  declared: readonly TensorSpec[] | undefined,
): TensorSpec[] {
  if (!declared) return reported.map((s) => ({ ...s, shape: [...s.shape] }));
  const problems: string[] = [];
  const byName = new Map(reported.map((s) => [s.name, s]));
  for (const d of declared) {
    const r = byName.get(d.name);
    if (!r) {
      problems.push(
        `${kind} "${d.name}" is declared but the model has ${kind}s ${reported.map((s) => `"${s.name}"`).join(', ')}`,
      );
      continue;
    }
    byName.delete(d.name);
    const dimsAgree =
      r.shape.length === d.shape.length && r.shape.every((dim, i) => dim === -1 || dim === d.shape[i]);
    if (r.datatype !== d.datatype || !dimsAgree) {
      problems.push(
        `${kind} "${d.name}": declared ${describeTensor(d.datatype, d.shape)}, model has ${describeTensor(r.datatype, r.shape)}`,
      );
    }
  }
  for (const name of byName.keys()) problems.push(`${kind} "${name}" of the model is not declared`);
  if (problems.length > 0) {
    throw new InfergridError(
      'MODEL_LOAD_FAILED',
      `model "${model}": config does not match the model: ${problems.join('; ')}`,
    );
  }
  return declared.map((s) => ({ ...s, shape: [...s.shape] }));
}

/** Picks the requested outputs, failing clearly on unknown names. */
export function selectOutputs<T extends { name: string }>(all: T[], wanted: string[] | undefined): T[] {
  if (!wanted) return all;
  return wanted.map((name) => {
    const t = all.find((o) => o.name === name);
    if (!t)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `unknown output "${name}"; the model has ${all.map((o) => `"${o.name}"`).join(', ')}`,
      );
    return t;
  });
}
