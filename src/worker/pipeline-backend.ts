/**
 * The `pipeline` backend of a worker (`pipeline.runOn: worker`): a pipeline model this worker
 * hosts, whose steps run against the models this same worker hosts, so tensors never leave the
 * process between steps. The coordinator sees an ordinary model and dispatches it as one
 * (routing, retries on another worker, deadlines and cancels).
 *
 * Each step is resolved on the local ModelHost, validated against its model's schema as the
 * worker validates a request from a coordinator, and submitted to that model's batcher, so
 * steps batch with the model's other traffic. The PipelineRunner wires tensors and names the
 * step in a step's error, as on the coordinator. A step model this worker does not host, or
 * that is not ready, is UNAVAILABLE naming pipeline, step, model and worker (retryable: the
 * coordinator tries another worker).
 *
 * Deadline and cancellation come from the pipeline's own batcher: at the request's deadline, or
 * when its coordinator cancels it, `ctx.signal` aborts, which aborts the running steps (a queued
 * step leaves its model's queue). The runner is given no deadline of its own.
 */

import type { Backend, InferContext, LoadedModel } from '../backends/index.ts';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { priorityOf } from '../protocol/index.ts';
import { PipelineRunner, type StepRequest, type StepResult, stepInputsMisfit } from '../pipeline/index.ts';
import { validateInputs } from '../registry/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { ModelHost } from './model-host.ts';

export const PIPELINE_PLATFORM = 'infergrid_pipeline';

/** What the backend uses of the worker's ModelHost. */
export type LocalModels = Pick<ModelHost, 'get' | 'run' | 'stream' | 'settled'>;

export interface PipelineBackendOptions {
  /** The host whose models the steps run on (the one that hosts the pipeline; read at load). */
  host: () => LocalModels;
  /** This worker's id, for messages. */
  workerId: string;
  /**
   * Settles once the worker has loaded the models its own placement gives it, pipelines aside. A
   * coordinator may send a pipeline to load as soon as the worker registers, before its step
   * models are loaded: the load waits for them instead of failing (and staying failed).
   */
  stepsLoaded?: Promise<void>;
}

class WorkerPipeline implements LoadedModel {
  readonly info;
  readonly #config: ModelConfig;
  readonly #runner: PipelineRunner;

  constructor(config: ModelConfig, host: LocalModels, workerId: string) {
    this.#config = config;
    this.info = { platform: PIPELINE_PLATFORM, inputs: config.inputs ?? [], outputs: config.outputs ?? [] };
    this.#runner = new PipelineRunner({
      // the pipeline's step requests are one sender to each step model's batcher, beside the
      // coordinators' connections
      runStep: (step) => runLocalStep(host, workerId, step, this),
    });
  }

  async infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]> {
    const result = await this.#runner.run({
      entry: { name: this.#config.name, version: this.#config.version, config: this.#config },
      inputs,
      outputs: ctx.outputs,
      // the request's priority holds for its steps, as the coordinator passes it on to them
      parameters: ctx.priority === undefined ? ctx.parameters : { ...ctx.parameters, priority: ctx.priority },
      // the batcher holds the request's deadline: ctx.signal aborts at it (see the header)
      timeoutMs: Number.POSITIVE_INFINITY,
      signal: ctx.signal,
    });
    return result.outputs;
  }

  async dispose(): Promise<void> {}
}

function unavailable(step: StepRequest, workerId: string, why: string, cause: unknown): InfergridError {
  return new InfergridError(
    'UNAVAILABLE',
    `pipeline "${step.pipeline}" step "${step.step}": model "${step.model}"${step.version ? ` version "${step.version}"` : ''} is not ready on worker ${workerId} (${why}); a pipeline that runs on its workers needs every step model placed on the same workers`,
    { cause, details: { pipeline: step.pipeline, step: step.step, model: step.model, worker: workerId } },
  );
}

async function runLocalStep(
  host: LocalModels,
  workerId: string,
  step: StepRequest,
  source: object,
): Promise<StepResult> {
  let model: ReturnType<LocalModels['get']>;
  try {
    model = host.get(step.model, step.version);
  } catch (err) {
    throw unavailable(step, workerId, (err as Error).message, err);
  }
  try {
    validateInputs(model.schema, step.inputs);
  } catch (err) {
    throw stepInputsMisfit(step.pipeline, step.step, step.model, err);
  }
  const parameters = step.parameters ?? {};
  let outputs: Tensor[];
  if (model.model.stream) {
    // a model that streams takes requests straight, never through a batcher; nobody reads partials
    const result = await host.stream(model, step.inputs, {
      signal: step.signal,
      parameters,
      outputs: undefined,
      emit: async () => {},
    });
    outputs = result.outputs;
  } else {
    outputs = await host.run(model, {
      inputs: step.inputs,
      parameters,
      priority: priorityOf(parameters.priority),
      signal: step.signal,
      source,
    });
  }
  return {
    meta: { model: model.config.name, version: model.config.version, outputs: [] },
    outputs,
    workerId,
  };
}

export function createPipelineBackend(options: PipelineBackendOptions): Backend {
  return {
    name: 'pipeline',
    async load(config: ModelConfig): Promise<LoadedModel> {
      const host = options.host();
      if (config.pipeline?.runOn !== 'worker')
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `pipeline "${config.name}" runs on the coordinator (pipeline.runOn: coordinator); a worker hosts only pipelines with runOn: worker`,
        );
      await options.stepsLoaded;
      // placement is checked in config; a model loaded at run time or given --models may still
      // miss one, or its load may have failed: the pipeline is ready only when every step is
      const missing: string[] = [];
      for (const s of config.pipeline.steps) {
        const step = await host.settled(s.model, s.version);
        const named = `model "${s.model}"${s.version ? ` version "${s.version}"` : ''} (step "${s.name}")`;
        if (step?.config.backend === 'pipeline')
          throw new InfergridError(
            'MODEL_LOAD_FAILED',
            `pipeline "${config.name}": step "${s.name}" is pipeline "${s.model}"; pipelines do not nest`,
          );
        if (!step) missing.push(`worker ${options.workerId} does not host ${named}`);
        else if (step.state !== 'ready')
          missing.push(
            `on worker ${options.workerId} ${named} is ${step.state}${step.error ? `: ${step.error}` : ''}`,
          );
      }
      if (missing.length > 0)
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `pipeline "${config.name}" runs on its workers, but ${missing.join('; ')}; place the step models on the same workers as the pipeline, ready`,
        );
      return new WorkerPipeline(config, host, options.workerId);
    },
  };
}
