/**
 * The models one worker hosts: loads them through their backends and keeps each one's state
 * ('loading' -> 'ready', or 'unavailable' with the load error). A model that fails to load
 * stays listed as unavailable with its error, so the coordinator can say why.
 */

import type { Backend, LoadedModel, ModelInfo } from '../backends/index.ts';
import { Batcher, ModelStats, type ModelStatsSnapshot } from '../batching/index.ts';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { ModelState, ModelStatus } from '../protocol/index.ts';
import { type ModelSchema, compareVersionsDesc, modelKey } from '../registry/index.ts';
import type { Logger } from '../telemetry/index.ts';
import {
  ELEMENT_BYTES,
  type Tensor,
  decodeBytesElements,
  describeTensor,
  elementCount,
  isDatatype,
} from '../tensor/index.ts';

export interface HostedModel {
  readonly config: ModelConfig;
  state: ModelState;
  model: LoadedModel | undefined;
  /** Schema used to check incoming requests, once loaded. */
  schema: ModelSchema | undefined;
  /** Queue and batcher in front of the model, once loaded. */
  batcher: Batcher | undefined;
  readonly stats: ModelStats;
  error: string | undefined;
}

/** A signal for batch executions: a batch, once started, runs to the end (its requests may still leave). */
const NEVER_ABORTED = new AbortController().signal;

/**
 * A js model can return anything; make sure it is well-formed tensors (bytes matching shape and
 * datatype) before they are split or encoded, so a model's bug is a BACKEND_ERROR here and never
 * looks like a client's bad input downstream.
 */
export function checkOutputs(outputs: unknown): asserts outputs is Tensor[] {
  const bad = (why: string): never => {
    throw new InfergridError('BACKEND_ERROR', `the model returned a malformed output: ${why}`);
  };
  if (!Array.isArray(outputs)) bad('expected a list of { name, datatype, shape, data: Uint8Array } tensors');
  for (const t of outputs as unknown[]) {
    const o = t as Partial<Tensor> | null;
    if (typeof o !== 'object' || o === null || typeof o.name !== 'string') bad('a tensor without a name');
    const { name, datatype, shape, data } = o as Tensor;
    if (!isDatatype(datatype)) bad(`"${name}" has datatype ${String(datatype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      bad(`"${name}" has shape ${JSON.stringify(shape)}`);
    }
    if (!(data instanceof Uint8Array)) bad(`"${name}" data is not a Uint8Array`);
    if (datatype === 'BYTES') {
      try {
        if (decodeBytesElements(data, `"${name}"`).length !== elementCount(shape)) {
          bad(`"${name}" BYTES element count does not match its shape`);
        }
      } catch (err) {
        if (err instanceof InfergridError && err.code === 'BACKEND_ERROR') throw err;
        bad((err as Error).message);
      }
    } else if (data.byteLength !== ELEMENT_BYTES[datatype] * elementCount(shape)) {
      bad(
        `"${name}" ${describeTensor(datatype, shape)} needs ${ELEMENT_BYTES[datatype] * elementCount(shape)} bytes, got ${data.byteLength}`,
      );
    }
  }
}

function createBatcher(config: ModelConfig, model: LoadedModel, stats: ModelStats): Batcher {
  const b = config.batching;
  return new Batcher({
    name: `model "${config.name}"`,
    maxBatchSize: b.enabled ? config.maxBatchSize : 1,
    maxQueueDelayMs: b.maxQueueDelayMs,
    preferredBatchSizes: b.enabled ? b.preferredBatchSizes : [],
    refillWait: b.enabled && b.refillWait,
    maxQueueSize: b.maxQueueSize,
    maxQueueBytes: b.maxQueueBytes,
    instances: b.instances,
    priorityLevels: b.priorityLevels,
    defaultPriorityLevel: b.defaultPriorityLevel,
    stats,
    execute: async (inputs, ctx) => {
      const outputs = await model.infer(inputs, {
        signal: NEVER_ABORTED,
        parameters: ctx.parameters,
        outputs: ctx.outputs,
      });
      checkOutputs(outputs);
      return outputs;
    },
  });
}

/** A hosted model that can take requests. */
export type ReadyModel = HostedModel & { model: LoadedModel; schema: ModelSchema; batcher: Batcher };

export class ModelHost {
  readonly #backends: ReadonlyMap<string, Backend>;
  readonly #logger: Logger;
  readonly #models = new Map<string, HostedModel>();
  /** Newest version per name, for requests that name none. */
  readonly #latest = new Map<string, string>();
  readonly #onChange: () => void;

  constructor(backends: ReadonlyMap<string, Backend>, logger: Logger, onChange: () => void = () => {}) {
    this.#backends = backends;
    this.#logger = logger;
    this.#onChange = onChange;
  }

  /** Loads a model; never throws: a failure leaves it 'unavailable' with the error recorded. */
  async load(config: ModelConfig): Promise<HostedModel> {
    const key = modelKey(config.name, config.version);
    const hosted: HostedModel = {
      config,
      state: 'loading',
      model: undefined,
      schema: undefined,
      batcher: undefined,
      stats: new ModelStats(config.name, config.version),
      error: undefined,
    };
    this.#models.set(key, hosted);
    const latest = this.#latest.get(config.name);
    if (latest === undefined || compareVersionsDesc(config.version, latest) < 0)
      this.#latest.set(config.name, config.version);
    this.#onChange();
    const started = performance.now();
    try {
      const backend = this.#backends.get(config.backend);
      if (!backend) throw new InfergridError('MODEL_LOAD_FAILED', `no backend named "${config.backend}"`);
      const model = await backend.load(config, {
        warn: (message) => this.#logger.warn({ model: config.name }, message),
      });
      hosted.model = model;
      hosted.batcher = createBatcher(config, model, hosted.stats);
      hosted.schema = {
        name: config.name,
        inputs: model.info.inputs,
        outputs: model.info.outputs,
        batchable: config.batchable,
        maxBatchSize: config.maxBatchSize,
      };
      hosted.state = 'ready';
      this.#logger.info(
        {
          model: config.name,
          version: config.version,
          backend: config.backend,
          loadMs: Math.round(performance.now() - started),
        },
        'model ready',
      );
    } catch (err) {
      const error = toInfergridError(err, 'MODEL_LOAD_FAILED');
      hosted.state = 'unavailable';
      hosted.error = error.message;
      this.#logger.error({ model: config.name, version: config.version, err: error }, 'model failed to load');
    }
    this.#onChange();
    return hosted;
  }

  /** The hosted model a request names; MODEL_NOT_FOUND or MODEL_NOT_READY otherwise. */
  get(name: string, version: string | undefined): ReadyModel {
    const v = version || this.#latest.get(name);
    const hosted = v === undefined ? undefined : this.#models.get(modelKey(name, v));
    if (!hosted) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `this worker does not host model "${name}"${version ? ` version "${version}"` : ''}`,
      );
    }
    if (hosted.state !== 'ready' || !hosted.model || !hosted.schema || !hosted.batcher) {
      throw new InfergridError(
        'MODEL_NOT_READY',
        `model "${name}" is ${hosted.state} on this worker${hosted.error ? `: ${hosted.error}` : ''}`,
      );
    }
    return hosted as ReadyModel;
  }

  statuses(): ModelStatus[] {
    return [...this.#models.values()].map((h) => {
      const info: ModelInfo | undefined = h.model?.info;
      return {
        name: h.config.name,
        version: h.config.version,
        state: h.state,
        platform: info?.platform ?? '',
        inputs: info?.inputs ?? [],
        outputs: info?.outputs ?? [],
        batchable: h.config.batchable,
        maxBatchSize: h.config.maxBatchSize,
        ...(h.error ? { error: h.error } : {}),
      };
    });
  }

  /** Statistics of every model this worker hosts. */
  statsSnapshots(): ModelStatsSnapshot[] {
    return [...this.#models.values()].map((h) => h.stats.snapshot());
  }

  get size(): number {
    return this.#models.size;
  }

  async unloadAll(): Promise<void> {
    const all = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(all.map((h) => h.model?.dispose()));
  }
}
