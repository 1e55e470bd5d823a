/**
 * The models one worker hosts: loads them through their backends and keeps each one's state
 * ('loading' -> 'ready', or 'unavailable' with the load error). A model that fails to load
 * stays listed as unavailable with its error, so the coordinator can say why.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Backend, LoadedModel, ModelInfo, StreamContext, StreamResult } from '../backends/index.ts';
import { Batcher, ModelStats, type ModelStatsSnapshot } from '../batching/index.ts';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { ModelState, ModelStatus, StreamStats } from '../protocol/index.ts';
import { type ModelSchema, compareVersionsDesc, modelKey } from '../registry/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { type Deferred, deferred } from '../util/deferred.ts';
import type { StatsObserver, SubmitOptions } from '../batching/index.ts';
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
  /** SHA-256 of the model file it was loaded from, when it has one. */
  fingerprint: string | undefined;
  /** Requests submitted and not yet settled (an unload waits for them). */
  active: number;
  /** A streaming model's requests (they bypass the batcher). */
  readonly streams: StreamStats;
  idle: Deferred<void> | undefined;
}

/** SHA-256 of a model file, streamed; undefined when it cannot be read (the backend's load then says why). */
async function fileFingerprint(path: string): Promise<string | undefined> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  } catch {
    return undefined;
  }
  return hash.digest('hex');
}

function malformedOutput(why: string): never {
  throw new InfergridError('BACKEND_ERROR', `the model returned a malformed output: ${why}`);
}

/**
 * A js model can return anything; make sure it is well-formed tensors (bytes matching shape and
 * datatype) before they are split or encoded, so a model's bug is a BACKEND_ERROR here and never
 * looks like a client's bad input downstream.
 */
export function checkOutputs(outputs: unknown): asserts outputs is Tensor[] {
  if (!Array.isArray(outputs))
    malformedOutput('expected a list of { name, datatype, shape, data: Uint8Array } tensors');
  for (const t of outputs as unknown[]) {
    const o = t as Partial<Tensor> | null;
    if (typeof o !== 'object' || o === null || typeof o.name !== 'string')
      malformedOutput('a tensor without a name');
    const { name, datatype, shape, data } = o as Tensor;
    if (!isDatatype(datatype)) malformedOutput(`"${name}" has datatype ${String(datatype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      malformedOutput(`"${name}" has shape ${JSON.stringify(shape)}`);
    }
    if (!(data instanceof Uint8Array)) malformedOutput(`"${name}" data is not a Uint8Array`);
    if (datatype === 'BYTES') {
      try {
        if (decodeBytesElements(data, `"${name}"`).length !== elementCount(shape)) {
          malformedOutput(`"${name}" BYTES element count does not match its shape`);
        }
      } catch (err) {
        if (err instanceof InfergridError && err.code === 'BACKEND_ERROR') throw err;
        malformedOutput((err as Error).message);
      }
    } else if (data.byteLength !== ELEMENT_BYTES[datatype] * elementCount(shape)) {
      malformedOutput(
        `"${name}" ${describeTensor(datatype, shape)} needs ${ELEMENT_BYTES[datatype] * elementCount(shape)} bytes, got ${data.byteLength}`,
      );
    }
  }
}

function createBatcher(config: ModelConfig, model: LoadedModel, stats: ModelStats): Batcher {
  const b = config.batching;
  /*
   * A worker-run pipeline's batcher only admits. A pipeline computes nothing itself (its steps
   * wait in their own models' batchers, where they batch), so it must not hold one request behind
   * another: no batching, and as many instances as requests may queue, so every admitted request
   * runs at once. Kept rather than bypassed so that a pipeline request is admitted, bounded,
   * expired, cancelled and counted like any other: its deadline and cancel abort `ctx.signal`,
   * which stops its steps.
   */
  const admitsOnly = config.backend === 'pipeline';
  const batches = b.enabled && !admitsOnly;
  return new Batcher({
    name: `${admitsOnly ? 'pipeline' : 'model'} "${config.name}"`,
    maxBatchSize: batches ? config.maxBatchSize : 1,
    maxQueueDelayMs: admitsOnly ? 0 : b.maxQueueDelayMs,
    preferredBatchSizes: batches ? b.preferredBatchSizes : [],
    refillWait: batches && b.refillWait,
    maxQueueSize: b.maxQueueSize,
    maxQueueBytes: b.maxQueueBytes,
    instances: admitsOnly ? b.maxQueueSize : b.instances,
    priorityLevels: b.priorityLevels,
    defaultPriorityLevel: b.defaultPriorityLevel,
    stats,
    execute: async (inputs, ctx) => {
      // ctx's signal aborts once every request of the batch was cancelled or passed its
      // deadline; it is made only if the backend reads it
      const outputs = await model.infer(inputs, ctx);
      // a backend that did not mark its run's end: checking its outputs is extraction, not the run
      ctx.runEnded();
      checkOutputs(outputs);
      return outputs;
    },
  });
}

/**
 * Statistics records kept for versions no longer hosted (unloaded, or reloaded: the record
 * carries over), most recently unloaded last; beyond this many the oldest is forgotten, so a
 * repository that cycles through versions cannot grow the map without bound.
 */
export const MAX_RETIRED_STATS = 256;

/** A hosted model that can take requests. */
export type ReadyModel = HostedModel & { model: LoadedModel; schema: ModelSchema; batcher: Batcher };

export class ModelHost {
  readonly #backends: ReadonlyMap<string, Backend>;
  readonly #logger: Logger;
  readonly #models = new Map<string, HostedModel>();
  /** Newest version per name, for requests that name none. */
  readonly #latest = new Map<string, string>();
  readonly #onChange: () => void;
  readonly #observer: ((name: string, version: string) => StatsObserver) | undefined;
  /**
   * Each version's statistics, hosted or not: a reload of the same version (load again, or
   * unload then load) continues its record, as Triton keeps a version's statistics. A new
   * version starts its own. Records of versions no longer hosted are bounded (MAX_RETIRED_STATS).
   */
  readonly #stats = new Map<string, ModelStats>();
  /** Loads under way per name@version, with the config each loads (an identical load joins it). */
  readonly #loads = new Map<string, { configJson: string; hosted: Promise<HostedModel> }>();

  /** `observer` feeds each model's durations to metrics (histograms). */
  constructor(
    backends: ReadonlyMap<string, Backend>,
    logger: Logger,
    onChange: () => void = () => {},
    observer?: (name: string, version: string) => StatsObserver,
  ) {
    this.#backends = backends;
    this.#logger = logger;
    this.#onChange = onChange;
    this.#observer = observer;
  }

  /**
   * Loads a model; never throws: a failure leaves it 'unavailable' with the error recorded.
   * Loading a model that is already ready with the same config does nothing; with another
   * config, the old one keeps serving until the new one is ready, then is retired (its
   * requests finish first). A reload that fails leaves the old one serving.
   */
  load(config: ModelConfig): Promise<HostedModel> {
    const key = modelKey(config.name, config.version);
    const configJson = JSON.stringify(config);
    const existing = this.#models.get(key);
    if (existing?.state === 'ready' && JSON.stringify(existing.config) === configJson)
      return Promise.resolve(existing);
    // the same load already under way (two coordinators of a cluster sending the same
    // repository load): joined, so the model is loaded once and its state does not flap
    const running = this.#loads.get(key);
    if (running && running.configJson === configJson) return running.hosted;
    const hosted = this.#load(key, config, existing);
    const load = { configJson, hosted };
    this.#loads.set(key, load);
    const done = () => {
      if (this.#loads.get(key) === load) this.#loads.delete(key);
    };
    hosted.then(done, done);
    return hosted;
  }

  async #load(key: string, config: ModelConfig, existing: HostedModel | undefined): Promise<HostedModel> {
    const replacing = existing?.state === 'ready' ? existing : undefined;
    const hosted: HostedModel = {
      config,
      state: 'loading',
      model: undefined,
      schema: undefined,
      batcher: undefined,
      stats: this.#statsOf(config.name, config.version),
      error: undefined,
      fingerprint: undefined,
      active: 0,
      idle: undefined,
      streams: { started: 0, running: 0, partials: 0, sent: 0, waiting: 0, cancelled: 0 },
    };
    if (!replacing) this.#models.set(key, hosted);
    this.#updateLatest(config.name);
    this.#onChange();
    const started = performance.now();
    try {
      const backend = this.#backends.get(config.backend);
      if (!backend) throw new InfergridError('MODEL_LOAD_FAILED', `no backend named "${config.backend}"`);
      // what the cache keys of its answers carry: a reload from a changed file never meets old answers
      if (config.path !== undefined) hosted.fingerprint = await fileFingerprint(config.path);
      const model = await backend.load(config, {
        warn: (message) => this.#logger.warn({ model: config.name }, message),
      });
      if (hosted.state === 'unloading') {
        // unloaded while it loaded: nobody will ever serve or dispose it but us
        await model.dispose();
        this.#logger.info({ model: config.name, version: config.version }, 'model unloaded while loading');
        return hosted;
      }
      // another load of the key finished first: with no earlier version, it holds the key;
      // replacing one, it already took the old version's place (and retired it)
      if (this.#models.get(key) !== (replacing ?? hosted)) {
        // a load of another config took its place while it loaded: that one is served; this
        // one would otherwise be held by nobody, never disposed
        await model.dispose();
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `model "${config.name}" version "${config.version}" was replaced by a load of another config while it loaded`,
        );
      }
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
      if (replacing) {
        this.#models.set(key, hosted);
        void this.#retire(replacing);
      }
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

  /** The record of a version: the one it had (hosted before) or a new one. */
  #statsOf(name: string, version: string): ModelStats {
    const key = modelKey(name, version);
    let stats = this.#stats.get(key);
    if (stats) {
      // in use again: no longer among the retired, whose order the map keeps
      this.#stats.delete(key);
    } else {
      stats = new ModelStats(name, version, this.#observer?.(name, version));
    }
    this.#stats.set(key, stats);
    this.#forgetRetired(key);
    return stats;
  }

  /** Drops the oldest records of versions not hosted beyond MAX_RETIRED_STATS; `loading` is about to be. */
  #forgetRetired(loading?: string): void {
    const hosted = (key: string): boolean => key === loading || this.#models.has(key);
    let retired = 0;
    for (const key of this.#stats.keys()) if (!hosted(key)) retired++;
    for (const key of this.#stats.keys()) {
      if (retired <= MAX_RETIRED_STATS) return;
      if (hosted(key)) continue;
      this.#stats.delete(key);
      retired--;
    }
  }

  /** Newest version per name, from what is hosted. */
  #updateLatest(name: string): void {
    let latest: string | undefined;
    for (const h of this.#models.values()) {
      if (
        h.config.name === name &&
        (latest === undefined || compareVersionsDesc(h.config.version, latest) < 0)
      )
        latest = h.config.version;
    }
    if (latest === undefined) this.#latest.delete(name);
    else this.#latest.set(name, latest);
  }

  /** Waits for a model's running requests, then releases it. */
  async #retire(hosted: HostedModel): Promise<void> {
    hosted.state = 'unloading';
    if (hosted.active > 0) {
      hosted.idle ??= deferred<void>();
      await hosted.idle.promise;
    }
    try {
      await hosted.model?.dispose();
    } catch (err) {
      this.#logger.warn({ model: hosted.config.name, err }, 'model dispose failed');
    }
  }

  /**
   * Unloads every version of `name` (or those listed): each stops taking requests at once
   * ('unloading'), finishes what it has, is disposed and forgotten. Resolves when all are gone.
   */
  async unload(name: string, versions?: readonly string[]): Promise<void> {
    const targets = [...this.#models.entries()].filter(
      ([, h]) => h.config.name === name && (!versions || versions.includes(h.config.version)),
    );
    if (targets.length === 0) return;
    for (const [, h] of targets) h.state = 'unloading';
    this.#onChange();
    await Promise.all(targets.map(([, h]) => this.#retire(h)));
    for (const [key, h] of targets) if (this.#models.get(key) === h) this.#models.delete(key);
    // their records stay (a load of the same version continues them), newest retired last
    for (const [key, h] of targets) {
      if (this.#models.has(key) || this.#stats.get(key) !== h.stats) continue;
      this.#stats.delete(key);
      this.#stats.set(key, h.stats);
    }
    this.#forgetRetired();
    this.#updateLatest(name);
    this.#logger.info({ model: name, versions: targets.map(([, h]) => h.config.version) }, 'model unloaded');
    this.#onChange();
  }

  /** Runs one request on a ready model through its batcher, counted so an unload waits for it. */
  async run(hosted: ReadyModel, options: SubmitOptions): Promise<Tensor[]> {
    hosted.active++;
    try {
      return await hosted.batcher.submit(options);
    } finally {
      this.#release(hosted);
    }
  }

  /**
   * Runs one request on a model that streams: straight to its `stream`, never through the
   * batcher (the model admits and batches for itself), counted so an unload waits for it.
   * `ctx.emit` is counted here; the outputs, partial and final, are checked like a batch's.
   */
  async stream(hosted: ReadyModel, inputs: Tensor[], ctx: StreamContext): Promise<StreamResult> {
    const stream = hosted.model.stream;
    if (!stream) throw new InfergridError('INTERNAL', `model "${hosted.config.name}" does not stream`);
    const stats = hosted.streams;
    hosted.active++;
    stats.started++;
    stats.running++;
    try {
      const result = await stream.call(hosted.model, inputs, {
        ...ctx,
        signal: ctx.signal,
        emit: async (outputs, parameters) => {
          stats.partials++;
          checkOutputs(outputs);
          stats.waiting++;
          try {
            await ctx.emit(outputs, parameters);
          } finally {
            stats.waiting--;
          }
        },
      });
      checkOutputs(result?.outputs);
      return result;
    } catch (err) {
      if (ctx.signal.aborted) stats.cancelled++;
      throw err;
    } finally {
      stats.running--;
      this.#release(hosted);
    }
  }

  #release(hosted: HostedModel): void {
    hosted.active--;
    if (hosted.active === 0 && hosted.idle) {
      hosted.idle.resolve();
      hosted.idle = undefined;
    }
  }

  /** The status of one hosted model (for replies to a load). */
  status(hosted: HostedModel): ModelStatus {
    const info: ModelInfo | undefined = hosted.model?.info;
    return {
      name: hosted.config.name,
      version: hosted.config.version,
      state: hosted.state,
      platform: info?.platform ?? '',
      inputs: info?.inputs ?? [],
      outputs: info?.outputs ?? [],
      batchable: hosted.config.batchable,
      maxBatchSize: hosted.config.maxBatchSize,
      ...(hosted.error ? { error: hosted.error } : {}),
      ...(hosted.fingerprint ? { fingerprint: hosted.fingerprint } : {}),
      ...(info?.llm
        ? {
            llm: {
              contextSize: info.llm.contextSize,
              vocabularySize: info.llm.vocabularySize,
              embeddingSize: info.llm.embeddingSize,
              sequences: info.llm.sequences,
              ...(info.llm.trainContextSize !== undefined
                ? { trainContextSize: info.llm.trainContextSize }
                : {}),
            },
          }
        : {}),
    };
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

  /**
   * A model as it stands once any load of it under way has ended (the newest version when none is
   * named): ready, failed, or not hosted at all (undefined).
   */
  async settled(name: string, version: string | undefined): Promise<HostedModel | undefined> {
    for (;;) {
      const v = version || this.#latest.get(name);
      if (v === undefined) return undefined;
      const key = modelKey(name, v);
      const hosted = this.#models.get(key);
      const running = this.#loads.get(key);
      // a pipeline is never waited for: pipelines loading each other would wait forever
      if (!running || hosted?.config.backend === 'pipeline') return hosted;
      // its failure is the model's state, read on the next turn
      await running.hosted.catch(() => undefined);
    }
  }

  statuses(): ModelStatus[] {
    return [...this.#models.values()].map((h) => this.status(h));
  }

  /** Statistics of every model this worker hosts. */
  statsSnapshots(): ModelStatsSnapshot[] {
    return [...this.#models.values()].map((h) =>
      h.model?.stream
        ? {
            ...h.stats.snapshot(),
            streams: { ...h.streams },
            ...(h.model.llmStats ? { llm: h.model.llmStats() } : {}),
          }
        : h.stats.snapshot(),
    );
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
