/**
 * The models one worker hosts: loads them through their backends and keeps each one's state
 * ('loading' -> 'ready', or 'unavailable' with the load error). A model that fails to load
 * stays listed as unavailable with its error, so the coordinator can say why.
 */

import type { Backend, LoadedModel, ModelInfo } from '../backends/index.ts';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { ModelState, ModelStatus } from '../protocol/index.ts';
import { type ModelSchema, compareVersionsDesc, modelKey } from '../registry/index.ts';
import type { Logger } from '../telemetry/index.ts';

export interface HostedModel {
  readonly config: ModelConfig;
  state: ModelState;
  model: LoadedModel | undefined;
  /** Schema used to check incoming requests, once loaded. */
  schema: ModelSchema | undefined;
  error: string | undefined;
}

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
  get(name: string, version: string | undefined): HostedModel & { model: LoadedModel; schema: ModelSchema } {
    const v = version || this.#latest.get(name);
    const hosted = v === undefined ? undefined : this.#models.get(modelKey(name, v));
    if (!hosted) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `this worker does not host model "${name}"${version ? ` version "${version}"` : ''}`,
      );
    }
    if (hosted.state !== 'ready' || !hosted.model || !hosted.schema) {
      throw new InfergridError(
        'MODEL_NOT_READY',
        `model "${name}" is ${hosted.state} on this worker${hosted.error ? `: ${hosted.error}` : ''}`,
      );
    }
    return hosted as HostedModel & { model: LoadedModel; schema: ModelSchema };
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

  get size(): number {
    return this.#models.size;
  }

  async unloadAll(): Promise<void> {
    const all = [...this.#models.values()];
    this.#models.clear();
    await Promise.allSettled(all.map((h) => h.model?.dispose()));
  }
}
