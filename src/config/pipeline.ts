/**
 * Pipeline wiring as config states it: where each step input comes from, checked once at load
 * so that a running pipeline never meets a dangling reference or a cycle.
 */

import type { ModelConfig } from './schema.ts';
import { servedModels } from './version-policy.ts';

/** Where a step's input (or a pipeline output) comes from. */
export type PipelineSource =
  | { readonly kind: 'input'; readonly input: string }
  | { readonly kind: 'step'; readonly step: string; readonly output: string };

/** `$image` -> pipeline input "image"; `cls.softmax_0.tmp_0` -> step "cls", output "softmax_0.tmp_0". */
export function parseSource(text: string): PipelineSource | undefined {
  if (text.startsWith('$')) return text.length > 1 ? { kind: 'input', input: text.slice(1) } : undefined;
  const dot = text.indexOf('.');
  if (dot <= 0 || dot === text.length - 1) return undefined;
  return { kind: 'step', step: text.slice(0, dot), output: text.slice(dot + 1) };
}

/** Whether a model is a pipeline whose steps the coordinator runs (not a model workers host). */
export function runsOnCoordinator(m: Pick<ModelConfig, 'backend' | 'pipeline'> | undefined): boolean {
  return m?.backend === 'pipeline' && m.pipeline?.runOn !== 'worker';
}

/**
 * Where a worker-run pipeline is placed and its step model is not (undefined when the step is
 * wherever the pipeline is): placement is `workers:` (a pool is expanded into it by then), none
 * meaning every worker. The step's candidate versions are its pinned one, else any of the name.
 */
function missingPlacement(
  pipeline: ModelConfig,
  step: readonly ModelConfig[],
  version: string | undefined,
): string | undefined {
  const candidates = step.filter((c) => version === undefined || c.version === version);
  if (candidates.length === 0) return undefined; // a pinned version that does not exist: said below
  if (candidates.some((c) => !c.workers)) return undefined;
  const placed = new Set(candidates.flatMap((c) => c.workers ?? []));
  if (!pipeline.workers)
    return `every worker (the pipeline has no workers: placement; the model is only on ${[...placed].join(', ')})`;
  const missing = pipeline.workers.filter((w) => !placed.has(w));
  return missing.length ? `worker${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : undefined;
}

/**
 * Problems with one pipeline model's definition (empty when it is sound): declared inputs and
 * outputs, step models that exist and are not pipelines, sources that name pipeline inputs or
 * earlier steps (so the steps form a DAG in the order written), every output mapped.
 */
export function checkPipeline(where: string, m: ModelConfig, all: readonly ModelConfig[]): string[] {
  const issues: string[] = [];
  const p = m.pipeline;
  if (!p) return [`${where}.pipeline: required for backend "pipeline" (steps and outputs)`];
  if (!m.inputs?.length || !m.outputs?.length)
    issues.push(`${where}: a pipeline needs its inputs and outputs declared`);
  if (m.path) issues.push(`${where}.path: a pipeline has no file; its steps name models`);
  if (p.runOn === 'coordinator' && (m.workers || m.pool))
    issues.push(
      `${where}: a pipeline runs on the coordinator; place its step models on workers instead (or set pipeline.runOn: worker)`,
    );
  const inputs = new Set((m.inputs ?? []).map((i) => i.name));
  const seen = new Set<string>();
  const check = (source: string, at: string): void => {
    const s = parseSource(source);
    if (!s) {
      issues.push(`${at}: "${source}" is neither "$<pipeline input>" nor "<step>.<output>"`);
    } else if (s.kind === 'input' && !inputs.has(s.input)) {
      issues.push(
        `${at}: the pipeline has no input "${s.input}" (inputs: ${[...inputs].join(', ') || 'none'})`,
      );
    } else if (s.kind === 'step' && !seen.has(s.step)) {
      issues.push(`${at}: "${s.step}" is not an earlier step (steps read only the steps before them)`);
    }
  };
  p.steps.forEach((step, i) => {
    const at = `${where}.pipeline.steps[${i}]`;
    if (seen.has(step.name)) issues.push(`${at}.name: step "${step.name}" is named twice`);
    const target = all.filter((c) => c.name === step.model);
    if (target.length === 0) issues.push(`${at}.model: no model "${step.model}" is defined`);
    else if (target.some((c) => c.backend === 'pipeline'))
      issues.push(`${at}.model: "${step.model}" is a pipeline; pipelines do not nest`);
    else if (step.version !== undefined && !target.some((c) => c.version === step.version))
      issues.push(`${at}.version: model "${step.model}" has no version "${step.version}"`);
    else if (step.version !== undefined && !servedModels(target).some((c) => c.version === step.version))
      issues.push(
        `${at}.version: model "${step.model}" version "${step.version}" is not served by its version policy`,
      );
    if (p.runOn === 'worker' && target.length > 0) {
      const missing = missingPlacement(m, target, step.version);
      if (missing)
        issues.push(
          `${at}.model: pipeline "${m.name}" runs on its workers (runOn: worker), but model "${step.model}" is not placed on ${missing}; place it there too, or the pipeline only where it is`,
        );
    }
    if (Object.keys(step.inputs).length === 0) issues.push(`${at}.inputs: map at least one input`);
    for (const [input, source] of Object.entries(step.inputs)) check(source, `${at}.inputs.${input}`);
    seen.add(step.name);
  });
  for (const out of m.outputs ?? []) {
    const source = p.outputs[out.name];
    if (source === undefined)
      issues.push(`${where}.pipeline.outputs: output "${out.name}" says no "<step>.<output>" it comes from`);
    else check(source, `${where}.pipeline.outputs.${out.name}`);
  }
  for (const name of Object.keys(p.outputs)) {
    if (!(m.outputs ?? []).some((o) => o.name === name))
      issues.push(`${where}.pipeline.outputs.${name}: not one of the declared outputs`);
  }
  return issues;
}
