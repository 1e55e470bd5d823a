/**
 * Runs a pipeline model (like a Triton ensemble): each step is an ordinary request for its
 * model through the coordinator's one entry point, so it is resolved, validated, routed,
 * balanced, batched, cached and retried like any other; the runner only wires tensors
 * between steps. A step starts as soon as the tensors it reads exist, so
 * independent steps run at the same time. Intermediate tensors travel worker -> coordinator
 * -> worker as the raw bytes of the RPC frames (views, never re-encoded).
 *
 * Errors: a step's own error keeps its code (a preprocessor refusing an image is the client's
 * 400) with the step named in the message; a tensor that does not fit the next step is the
 * pipeline's definition at fault (INTERNAL, decided by the coordinator for a pipeline's
 * caller). The first failure cancels the other steps.
 */

import type { CacheMode } from '../cache/index.ts';
import { type PipelineSource, parseSource } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { ComputeTimings, InferResponseMeta, Parameters } from '../protocol/index.ts';
import type { ModelEntry } from '../registry/index.ts';
import { type TraceContext, endStage, startStage } from '../telemetry/index.ts';
import type { Tensor } from '../tensor/index.ts';

/** One step's request as the runner hands it to the coordinator's entry point. */
export interface StepRequest {
  /** The pipeline and the step, for the coordinator's messages. */
  pipeline: string;
  step: string;
  model: string;
  version: string | undefined;
  inputs: Tensor[];
  parameters?: Parameters | undefined;
  id?: string | undefined;
  timeoutMs: number;
  signal: AbortSignal;
  cacheMode: CacheMode;
  /** The step's span: the step's own work is traced under it. */
  traceContext?: TraceContext | undefined;
}

export interface StepResult {
  meta: InferResponseMeta;
  outputs: Tensor[];
  workerId: string | undefined;
  /** Where the step's time went on its worker; none when the cache answered it. */
  timings?: ComputeTimings | undefined;
}

/**
 * A step's inputs that do not fit its model: the pipeline's wiring is at fault, not the client's
 * input (INTERNAL), wherever the step runs (the coordinator, or a worker running the pipeline).
 */
export function stepInputsMisfit(
  pipeline: string,
  step: string,
  model: string,
  err: unknown,
): InfergridError {
  return new InfergridError(
    'INTERNAL',
    `pipeline "${pipeline}" step "${step}" (${model}): its inputs do not fit the model: ${(err as Error).message}`,
    { cause: err, details: { pipeline, step } },
  );
}

/** What the runner reads of a pipeline model: its name, version and config. */
export type PipelineEntry = Pick<ModelEntry, 'name' | 'version' | 'config'>;

export interface PipelineRequest {
  entry: PipelineEntry;
  inputs: Tensor[];
  outputs?: string[] | undefined;
  parameters?: Parameters | undefined;
  id?: string | undefined;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** How the request's steps meet the response cache (a client's bypass holds for every step). */
  cacheMode?: CacheMode;
  /** The span the steps' spans go under. */
  traceContext?: TraceContext | undefined;
}

/** What each step did, in the order the steps are written. */
export interface StepTrace {
  step: string;
  model: string;
  version: string;
  workerId: string | undefined;
  ms: number;
}

export interface PipelineResult {
  meta: InferResponseMeta;
  outputs: Tensor[];
  steps: StepTrace[];
  /** Its steps' queue and compute times summed (Triton reports an ensemble's so). */
  timings: ComputeTimings;
}

export interface PipelineRunnerOptions {
  /** Runs one step (the coordinator's own entry point: resolve, validate, cache, routing, retries). */
  runStep: (request: StepRequest) => Promise<StepResult>;
  now?: () => number;
  /** Who publishes the steps' stage events (a span per step, when tracing listens): the coordinator. Default: the runner. */
  source?: object;
}

interface CompiledStep {
  name: string;
  model: string;
  version: string | undefined;
  inputs: { name: string; from: PipelineSource }[];
  parameters: Parameters | undefined;
  /** Steps whose outputs this one reads. */
  after: string[];
}

/** The `<step>.<output>` or `$input` a source names, for messages. */
function describe(source: PipelineSource): string {
  return source.kind === 'input' ? `$${source.input}` : `${source.step}.${source.output}`;
}

export class PipelineRunner {
  readonly #o: PipelineRunnerOptions;
  readonly #now: () => number;
  readonly #source: object;
  /** Compiled step lists per pipeline config (configs are replaced, never mutated). */
  readonly #compiled = new WeakMap<object, CompiledStep[]>();
  /** Pipeline requests run, and steps run for them. */
  runs = 0;
  stepRuns = 0;

  constructor(options: PipelineRunnerOptions) {
    this.#o = options;
    this.#now = options.now ?? performance.now.bind(performance);
    this.#source = options.source ?? this;
  }

  #compile(entry: PipelineEntry): CompiledStep[] {
    const pipeline = entry.config?.pipeline;
    if (!pipeline) throw new InfergridError('INTERNAL', `model "${entry.name}" is not a pipeline`);
    let steps = this.#compiled.get(pipeline);
    if (!steps) {
      steps = pipeline.steps.map((s) => {
        const inputs = Object.entries(s.inputs).map(([name, text]) => ({ name, from: parseSource(text)! }));
        const after = [...new Set(inputs.flatMap((i) => (i.from.kind === 'step' ? [i.from.step] : [])))];
        return {
          name: s.name,
          model: s.model,
          version: s.version,
          inputs,
          parameters: s.parameters,
          after,
        };
      });
      this.#compiled.set(pipeline, steps);
    }
    return steps;
  }

  async run(request: PipelineRequest): Promise<PipelineResult> {
    const { entry } = request;
    const steps = this.#compile(entry);
    const pipeline = entry.config!.pipeline!;
    const deadline = this.#now() + request.timeoutMs;
    this.runs++;
    // the first failure (or the client going away) stops every other step
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(request.signal!.reason);
    if (request.signal?.aborted) onAbort();
    else request.signal?.addEventListener('abort', onAbort, { once: true });

    const given = new Map(request.inputs.map((t) => [t.name, t]));
    const produced = new Map<string, Map<string, Tensor>>();
    const running = new Map<string, Promise<void>>();
    const traces: StepTrace[] = [];
    const timings: ComputeTimings = { queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 };
    const tensorOf = (source: PipelineSource, forWhat: string): Tensor => {
      const t =
        source.kind === 'input' ? given.get(source.input) : produced.get(source.step)?.get(source.output);
      if (!t) {
        throw new InfergridError(
          'INTERNAL',
          `pipeline "${entry.name}": ${forWhat} reads ${describe(source)}, which ${source.kind === 'input' ? 'the request did not send' : `step "${source.step}" did not return`}`,
        );
      }
      return t;
    };

    const runStep = async (step: CompiledStep, index: number): Promise<void> => {
      await Promise.all(step.after.map((name) => running.get(name)));
      if (controller.signal.aborted) throw controller.signal.reason;
      const inputs = step.inputs.map(({ name, from }) => {
        const t = tensorOf(from, `step "${step.name}" input "${name}"`);
        return t.name === name ? t : { name, datatype: t.datatype, shape: t.shape, data: t.data };
      });
      const remaining = Math.round(deadline - this.#now());
      if (remaining <= 0)
        throw new InfergridError(
          'DEADLINE_EXCEEDED',
          `pipeline "${entry.name}" ran out of time before step "${step.name}"`,
        );
      const started = this.#now();
      this.stepRuns++;
      const stage = startStage(
        this.#source,
        'step',
        request.traceContext,
        step.model,
        undefined,
        undefined,
        undefined,
        entry.name,
        step.name,
      );
      let result: StepResult;
      try {
        result = await this.#o.runStep({
          pipeline: entry.name,
          step: step.name,
          model: step.model,
          version: step.version,
          inputs,
          parameters: step.parameters ? { ...request.parameters, ...step.parameters } : request.parameters,
          id: request.id,
          timeoutMs: remaining,
          signal: controller.signal,
          cacheMode: request.cacheMode ?? 'normal',
          // the step's own work is traced under its span
          traceContext: stage?.context ?? request.traceContext,
        });
        if (stage) {
          stage.workerId = result.workerId;
          endStage(stage);
        }
      } catch (err) {
        endStage(stage, err);
        const e = toInfergridError(err);
        // the coordinator already named the pipeline and step (it could not resolve or validate it)
        if (e.code === 'CANCELLED' || e.code === 'DEADLINE_EXCEEDED' || e.details?.step === step.name)
          throw e;
        throw new InfergridError(e.code, `step "${step.name}" (${step.model}): ${e.message}`, {
          ...(e.details ? { details: e.details } : {}),
          cause: e,
        });
      }
      produced.set(step.name, new Map(result.outputs.map((t) => [t.name, t])));
      if (result.timings) {
        timings.queueNs += result.timings.queueNs;
        timings.computeInputNs += result.timings.computeInputNs;
        timings.computeInferNs += result.timings.computeInferNs;
        timings.computeOutputNs += result.timings.computeOutputNs;
      }
      traces[index] = {
        step: step.name,
        model: result.meta.model,
        version: result.meta.version,
        workerId: result.workerId,
        ms: this.#now() - started,
      };
    };

    try {
      steps.forEach((step, i) => {
        const p = runStep(step, i);
        // the first failure cancels the rest; later ones are only its echoes
        p.catch((err: unknown) => controller.abort(toInfergridError(err)));
        running.set(step.name, p);
      });
      const settled = await Promise.allSettled(running.values());
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw controller.signal.reason ?? failed.reason;
    } finally {
      request.signal?.removeEventListener('abort', onAbort);
    }

    const wanted = request.outputs ?? (entry.config!.outputs ?? []).map((o) => o.name);
    const outputs = wanted.map((name) => {
      const spec = entry.config!.outputs!.find((o) => o.name === name)!;
      const t = tensorOf(parseSource(pipeline.outputs[name]!)!, `output "${name}"`);
      if (t.datatype !== spec.datatype)
        throw new InfergridError(
          'INTERNAL',
          `pipeline "${entry.name}" output "${name}" is declared ${spec.datatype} but ${pipeline.outputs[name]} is ${t.datatype}`,
        );
      return { name, datatype: t.datatype, shape: t.shape, data: t.data };
    });
    return {
      meta: {
        model: entry.name,
        version: entry.version,
        ...(request.id !== undefined ? { id: request.id } : {}),
        outputs: outputs.map(({ name, datatype, shape }) => ({ name, datatype, shape })),
      },
      outputs,
      steps: traces,
      timings,
    };
  }
}
