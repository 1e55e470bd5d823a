/**
 * The model repository extension: load and unload models at run time, on the workers their
 * placement names, without restarting anything. The coordinator keeps what operators asked for
 * (loaded with this config, or unloaded) and applies it again to any worker that (re)joins,
 * so a restarted worker does not bring back an unloaded model or miss a loaded one.
 */

import { type ModelConfig, checkPipeline, modelSchema } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { ModelStatus } from '../protocol/index.ts';
import type { ModelRegistry, RepositoryIndexEntry } from '../registry/index.ts';
import type { Logger } from '../telemetry/index.ts';
import type { WorkerHandle, WorkerPool } from './worker-pool.ts';

export interface ModelRepositoryOptions {
  registry: ModelRegistry;
  pool: WorkerPool;
  logger: Logger;
  /** How long a worker may take to load a model, ms. */
  loadTimeoutMs: number;
}

/** Whether a model's placement puts it on this worker (no placement: every worker). */
function placedOn(config: ModelConfig, worker: WorkerHandle): boolean {
  return !config.workers || config.workers.includes(worker.id);
}

export class ModelRepository {
  readonly #o: ModelRepositoryOptions;
  /** Names an operator loaded or unloaded, and which. */
  readonly #desired = new Map<string, 'loaded' | 'unloaded'>();

  constructor(options: ModelRepositoryOptions) {
    this.#o = options;
    options.pool.on('joined', (handle) => this.#reconcile(handle));
  }

  index(): RepositoryIndexEntry[] {
    return this.#o.registry.index();
  }

  /**
   * Loads every served version of `name` on the workers placed to host it and resolves once
   * each has answered; with `config`, (re)defines the model first (a new model, or a new path
   * or settings for a known one). MODEL_LOAD_FAILED names each worker that failed and why.
   */
  async load(name: string, config?: unknown): Promise<RepositoryIndexEntry[]> {
    const { registry } = this.#o;
    let configs: ModelConfig[];
    if (config !== undefined) {
      const parsed = modelSchema.safeParse(typeof config === 'string' ? parseJson(config) : config);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `parameters.config is not a valid model config: ${issue.path.join('.') || '(root)'}: ${issue.message}`,
        );
      }
      if (parsed.data.name !== name)
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `parameters.config names model "${parsed.data.name}" but the URL loads "${name}"`,
        );
      if (parsed.data.backend === 'pipeline') {
        const issues = checkPipeline('config', parsed.data, [...registry.declared(), parsed.data]);
        if (issues.length) throw new InfergridError('INVALID_ARGUMENT', issues.join('; '));
      } else if ((parsed.data.backend === 'onnx' || parsed.data.backend === 'js') && !parsed.data.path) {
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `config.path: required for backend "${parsed.data.backend}"`,
        );
      }
      configs = [parsed.data];
    } else {
      configs = registry.declared().filter((m) => m.name === name);
      if (configs.length === 0)
        throw new InfergridError(
          'MODEL_NOT_FOUND',
          `no model "${name}" is configured; send its config as parameters.config to load a new one`,
        );
    }
    const served = registry.declare(configs, name);
    this.#desired.set(name, 'loaded');
    if (served.every((c) => c.backend === 'pipeline')) return this.#indexOf(name);

    const servedVersions = new Set(served.map((c) => c.version));
    const workers = this.#o.pool.list().filter((w) => !w.draining);
    const jobs: Promise<string | undefined>[] = [];
    for (const worker of workers) {
      const wanted = served.filter((c) => placedOn(c, worker));
      const stale = this.#hostedVersions(name, worker.id).filter((v) => !servedVersions.has(v));
      if (stale.length > 0) jobs.push(this.#unloadOn(worker, name, stale));
      if (wanted.length > 0) jobs.push(this.#loadOn(worker, wanted));
    }
    if (!workers.some((w) => served.some((c) => placedOn(c, w)))) {
      const placement = served.find((c) => c.workers)?.workers;
      throw new InfergridError(
        'UNAVAILABLE',
        `no connected worker is placed to host model "${name}"${placement ? ` (placement: ${placement.join(', ')})` : ''}; connected: ${workers.map((w) => w.id).join(', ') || 'none'}`,
      );
    }
    const failures = (await Promise.all(jobs)).filter((f): f is string => f !== undefined);
    if (failures.length > 0)
      throw new InfergridError(
        'MODEL_LOAD_FAILED',
        `model "${name}" failed to load: ${failures.join('; ')}`,
        {
          details: { failures },
        },
      );
    return this.#indexOf(name);
  }

  /**
   * Stops serving `name` at once (requests get MODEL_NOT_FOUND saying it is unloaded) and
   * unloads it from every worker, each after finishing the requests it has.
   */
  async unload(name: string): Promise<void> {
    const { registry } = this.#o;
    if (!registry.isUnloaded(name)) registry.resolve(name); // MODEL_NOT_FOUND for a name nobody knows
    registry.markUnloaded(name);
    this.#desired.set(name, 'unloaded');
    const jobs = this.#o.pool
      .list()
      .filter((w) => this.#hostedVersions(name, w.id).length > 0)
      .map((w) => this.#unloadOn(w, name));
    const failures = (await Promise.all(jobs)).filter((f): f is string => f !== undefined);
    if (failures.length > 0)
      this.#o.logger.warn({ model: name, failures }, 'some workers could not unload the model');
  }

  #indexOf(name: string): RepositoryIndexEntry[] {
    return this.#o.registry.index().filter((e) => e.name === name);
  }

  /** Versions of `name` a worker reports hosting. */
  #hostedVersions(name: string, workerId: string): string[] {
    const out: string[] = [];
    for (const e of this.#o.registry.allEntries())
      if (e.name === name && e.replicas.has(workerId)) out.push(e.version);
    return out;
  }

  /** Loads on one worker; resolves with a failure description, or undefined when all loaded. */
  async #loadOn(worker: WorkerHandle, configs: ModelConfig[]): Promise<string | undefined> {
    let statuses: ModelStatus[];
    try {
      statuses = await worker.control({ action: 'load', models: configs }, this.#o.loadTimeoutMs);
    } catch (err) {
      return `${worker.id}: ${toInfergridError(err).message}`;
    }
    const failed = statuses.filter((s) => s.state !== 'ready');
    if (failed.length === 0) return undefined;
    return failed
      .map((s) => `${worker.id}: ${s.name}@${s.version} ${s.state}${s.error ? ` (${s.error})` : ''}`)
      .join('; ');
  }

  async #unloadOn(worker: WorkerHandle, name: string, versions?: string[]): Promise<string | undefined> {
    try {
      await worker.control(
        { action: 'unload', name, ...(versions ? { versions } : {}) },
        this.#o.loadTimeoutMs,
      );
      return undefined;
    } catch (err) {
      return `${worker.id}: ${toInfergridError(err).message}`;
    }
  }

  /** Applies what operators asked for to a worker that just joined. */
  #reconcile(worker: WorkerHandle): void {
    const { registry, logger } = this.#o;
    for (const [name, want] of this.#desired) {
      const hosted = this.#hostedVersions(name, worker.id);
      let job: Promise<string | undefined> | undefined;
      if (want === 'unloaded' && hosted.length > 0) job = this.#unloadOn(worker, name);
      if (want === 'loaded') {
        const missing = registry
          .servedConfigs(name)
          .filter((c) => c.backend !== 'pipeline' && placedOn(c, worker) && !hosted.includes(c.version));
        if (missing.length > 0) job = this.#loadOn(worker, missing);
      }
      void job?.then((failure) => {
        if (failure)
          logger.warn(
            { worker: worker.id, model: name, failure },
            'could not bring a joining worker in line',
          );
      });
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameters.config is not valid JSON: ${(err as Error).message}`,
    );
  }
}
