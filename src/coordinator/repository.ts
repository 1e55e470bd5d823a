/**
 * The model repository extension: load and unload models at run time, on the workers their
 * placement names, without restarting anything. The coordinator keeps what operators asked for
 * (loaded with this config, or unloaded) and applies it again to any worker that (re)joins,
 * so a restarted worker does not bring back an unloaded model or miss a loaded one. It does so
 * on every model list a worker reports, not only the one it joins with: a restarted worker
 * loads its own config's models one after another, so an unloaded model may start loading
 * there well after the worker joined.
 */

import { resolve } from 'node:path';
import {
  type ModelConfig,
  type RuntimeLoadPolicy,
  admitLabels,
  admitRuntimeModel,
  checkPipeline,
  findTritonVersions,
  fromTritonConfig,
  isTritonConfig,
  modelSchema,
  runsOnCoordinator,
} from '../config/index.ts';
import { type ErrorCode, InfergridError, toInfergridError } from '../errors.ts';
import type { ModelStatus } from '../protocol/index.ts';
import { type ModelRegistry, type RepositoryIndexEntry, isPlacedOn } from '../registry/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { type ControlChangeOptions, type ControlJournal, NO_ENTRY } from './control-journal.ts';
import type { WorkerHandle, WorkerPool } from './worker-pool.ts';

/** Configs a replicated load record may carry for one name (one per version), at most. */
export const MAX_REPLICATED_CONFIGS = 64;

export interface ModelRepositoryOptions {
  registry: ModelRegistry;
  pool: WorkerPool;
  logger: Logger;
  /** How long a worker may take to load a model, ms. */
  loadTimeoutMs: number;
  /**
   * What a config sent to the load API may name: files inside the repository roots, and `js`
   * models only when allowed. Checked here to fail fast; each worker checks again for itself.
   */
  runtimeLoads: RuntimeLoadPolicy;
  /**
   * Where operators' loads, unloads and traffic splits are reported beyond this coordinator
   * (the cluster's shared control plane); read at each change, none: not reported.
   */
  journal?: (() => ControlJournal | undefined) | undefined;
}

/** A worker's failed load or unload: the text names the worker; the code is the worker's. */
interface JobFailure {
  text: string;
  code: ErrorCode;
}

function placedOn(config: ModelConfig, worker: WorkerHandle): boolean {
  return isPlacedOn(config, worker.id);
}

export class ModelRepository {
  readonly #o: ModelRepositoryOptions;
  /** Names an operator loaded or unloaded, and which. */
  readonly #desired = new Map<string, 'loaded' | 'unloaded'>();
  /**
   * Model-control jobs running, per worker incarnation and model name. Reconciling leaves
   * those alone: the job's own reports (a model 'loading' or 'unloading') must not start
   * another load or unload of the same model.
   */
  readonly #pending = new Map<string, number>();

  constructor(options: ModelRepositoryOptions) {
    this.#o = options;
    options.pool.on('joined', (handle) => this.#reconcile(handle));
    options.registry.on('worker-models', (workerId) => {
      const handle = options.pool.get(workerId);
      if (handle) this.#reconcile(handle);
    });
  }

  index(): RepositoryIndexEntry[] {
    return this.#o.registry.index();
  }

  /**
   * Loads every served version of `name` on the workers placed to host it and resolves once
   * each has answered; with `config`, (re)defines the model first (a new model, or a new path
   * or settings for a known one). MODEL_LOAD_FAILED names each worker that failed and why;
   * FORBIDDEN when the config names a file outside the repository roots or a js model that
   * runtime loads may not define (here, or on every worker that answered). `config` is the
   * engine's own model config or Triton's (isTritonConfig says which; docs/repository.md).
   */
  async load(name: string, config?: unknown): Promise<RepositoryIndexEntry[]> {
    const { registry } = this.#o;
    const entry = this.#o.journal?.()?.begin('repository', name) ?? NO_ENTRY;
    let configs: ModelConfig[];
    try {
      if (config !== undefined) {
        const raw = typeof config === 'string' ? parseJson(config) : config;
        const drafts = isTritonConfig(raw) ? this.#fromTriton(name, raw) : [raw];
        configs = drafts.map((draft) => this.#checked(name, draft));
      } else {
        configs = registry.declared().filter((m) => m.name === name);
        if (configs.length === 0)
          throw new InfergridError(
            'MODEL_NOT_FOUND',
            `no model "${name}" is configured; send its config as parameters.config to load a new one`,
          );
      }
    } catch (err) {
      entry.abort();
      throw err;
    }
    // what other coordinators declare and load: the configs this name has here once loaded (a
    // load without config, or in Triton's shape, is shared in the engine's own, complete shape)
    const shared = () => ({ configs: registry.declared().filter((m) => m.name === name) });
    try {
      const models = await this.#loadChecked(name, configs, true);
      entry.commit('load', shared());
      return models;
    } catch (err) {
      // failed on some workers, but still what the operator asked for here (it is retried as
      // workers report): other coordinators ask the same. Forgotten (loaded nowhere): nothing to share.
      if (this.#desired.get(name) === 'loaded') entry.commit('load', shared());
      else entry.abort();
      throw err;
    }
  }

  /**
   * Applies a load another coordinator made (its record's configs): each config goes through
   * the same checks as an operator's (a record is untrusted: a config naming a file outside the
   * repository roots is refused here, and by every worker again). The name is declared and
   * wanted loaded even if no worker can load it now (workers that join later load it); worker
   * failures are logged, not thrown. INVALID_ARGUMENT or FORBIDDEN when the record's configs
   * are not acceptable (nothing changes then).
   */
  async loadReplicated(name: string, configs: unknown): Promise<void> {
    if (!Array.isArray(configs) || configs.length === 0 || configs.length > MAX_REPLICATED_CONFIGS)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `a replicated load of "${name}" must carry 1 to ${MAX_REPLICATED_CONFIGS} configs`,
      );
    const checked = configs.map((c) => this.#checked(name, c));
    try {
      await this.#loadChecked(name, checked, false);
    } catch (err) {
      const error = toInfergridError(err);
      // no worker here yet (a coordinator starting): those that join load it
      const level = error.code === 'UNAVAILABLE' ? 'info' : 'warn';
      this.#o.logger[level](
        { model: name, err: error.message },
        'a load made on another coordinator did not complete on every worker here; workers are brought in line as they report',
      );
    }
  }

  async #loadChecked(
    name: string,
    configs: ModelConfig[],
    forgetOnFailure: boolean,
  ): Promise<RepositoryIndexEntry[]> {
    const { registry } = this.#o;
    const isNew = !registry.declared().some((m) => m.name === name);
    const wasReady = !isNew && !registry.isUnloaded(name) && this.#readyNow(name);
    const served = registry.declare(configs, name);
    this.#desired.set(name, 'loaded');
    // a model that was not serving is not ready until every placed worker has answered
    if (!wasReady) registry.setLoading(name, true);
    try {
      await this.#apply(name, served);
    } catch (err) {
      // a new model that loaded nowhere is forgotten, not left declared and never ready
      if (forgetOnFailure && isNew && !this.#readyNow(name)) {
        registry.forget(name);
        this.#desired.delete(name);
      }
      throw err;
    } finally {
      if (!wasReady) registry.setLoading(name, false);
    }
    return this.#indexOf(name);
  }

  /** A config sent to load, parsed and checked: its name, pipeline or path, and what it may name. */
  #checked(name: string, draft: unknown): ModelConfig {
    const { registry } = this.#o;
    const parsed = modelSchema.safeParse(draft);
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
    // missing model files are the workers' to report: they may hold files this machine lacks
    admitRuntimeModel(parsed.data, this.#o.runtimeLoads);
    // labels are read here, by the coordinator: they must be here
    admitLabels(parsed.data, this.#o.runtimeLoads);
    return parsed.data;
  }

  /**
   * A Triton model config as the engine's, one per version. A model already declared keeps its
   * files (each version's path) and takes the rest from the Triton config; a new one is found in
   * Triton's layout, `<root>/<name>/<version>/<default_model_filename>`, in the repository roots.
   */
  #fromTriton(name: string, raw: Record<string, unknown>): Record<string, unknown>[] {
    const { paths } = this.#o.runtimeLoads;
    const { model, modelFilename, labelFiles } = fromTritonConfig(raw, name);
    const labels = (dir: string) =>
      Object.keys(labelFiles).length === 0
        ? {}
        : { labels: Object.fromEntries(Object.entries(labelFiles).map(([o, f]) => [o, resolve(dir, f)])) };
    const declared = this.#o.registry.declared().filter((m) => m.name === name);
    if (declared.length > 0) {
      const other = declared.find((m) => m.backend !== 'onnx');
      if (other)
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `model "${name}" is a ${other.backend} model; a Triton config can describe only onnx models (platform "onnxruntime_onnx")`,
        );
      // no Triton folder of its own: label_filename is relative to the config file's folder
      // what Triton's shape cannot say (placement, routing, onnx options, traffic) stays as declared
      return declared.map((m) => ({
        ...model,
        ...labels(paths.baseDir),
        version: m.version,
        path: m.path,
        ...(m.workers ? { workers: m.workers } : {}),
        ...(m.pool ? { pool: m.pool } : {}),
        ...(m.traffic !== undefined ? { traffic: m.traffic } : {}),
        routing: m.routing,
        onnx: m.onnx,
      }));
    }
    const found = findTritonVersions(paths.roots, name, modelFilename);
    if (!found || found.versions.length === 0)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${name}": a Triton config loads the model from Triton's layout, <root>/${name}/<version>/${modelFilename}, and ${found ? `the folder "${name}" has no numbered version folder holding ${modelFilename}` : `no repository root has a folder "${name}"`}`,
      );
    return found.versions.map((v) => ({ ...model, ...labels(found.dir), version: v.version, path: v.path }));
  }

  #readyNow(name: string): boolean {
    const { registry } = this.#o;
    const versions = registry.versions(name);
    return versions.some((v) => {
      const entry = [...registry.allEntries()].find((e) => e.name === name && e.version === v);
      return entry !== undefined && registry.readyReplicas(entry).length > 0;
    });
  }

  async #apply(name: string, served: ModelConfig[]): Promise<void> {
    if (served.every((c) => runsOnCoordinator(c))) return;

    const servedVersions = new Set(served.map((c) => c.version));
    const workers = this.#o.pool.list().filter((w) => !w.draining);
    const jobs: Promise<JobFailure | undefined>[] = [];
    for (const worker of workers) {
      const wanted = served.filter((c) => placedOn(c, worker));
      const stale = this.#hostedVersions(name, worker.id).filter((v) => !servedVersions.has(v));
      if (stale.length > 0) jobs.push(this.#track(worker, name, this.#unloadOn(worker, name, stale)));
      if (wanted.length > 0) jobs.push(this.#track(worker, name, this.#loadOn(worker, wanted)));
    }
    if (!workers.some((w) => served.some((c) => placedOn(c, w)))) {
      const placement = served.find((c) => c.workers)?.workers;
      throw new InfergridError(
        'UNAVAILABLE',
        `no connected worker is placed to host model "${name}"${placement ? ` (placement: ${placement.join(', ')})` : ''}; connected: ${workers.map((w) => w.id).join(', ') || 'none'}`,
      );
    }
    const failures = (await Promise.all(jobs)).filter((f) => f !== undefined);
    if (failures.length > 0) {
      const texts = failures.map((f) => f.text);
      // refused by policy everywhere: the client's request is at fault, not a worker
      const code = failures.every((f) => f.code === 'FORBIDDEN') ? 'FORBIDDEN' : 'MODEL_LOAD_FAILED';
      throw new InfergridError(code, `model "${name}" failed to load: ${texts.join('; ')}`, {
        details: { failures: texts },
      });
    }
  }

  /**
   * Stops serving `name` at once (requests get MODEL_NOT_FOUND saying it is unloaded) and
   * unloads it from every worker, each after finishing the requests it has.
   */
  async unload(name: string, options: ControlChangeOptions = {}): Promise<void> {
    const { registry } = this.#o;
    const known = registry.isUnloaded(name) || registry.versions(name).length > 0 || this.#isDeclared(name);
    // another coordinator's unload of a model never loaded here: nothing to do
    if (options.replicated && !known) return;
    const entry = options.replicated
      ? NO_ENTRY
      : (this.#o.journal?.()?.begin('repository', name) ?? NO_ENTRY);
    try {
      // MODEL_NOT_FOUND for a name nobody knows
      if (!options.replicated && !registry.isUnloaded(name)) registry.resolve(name);
    } catch (err) {
      entry.abort();
      throw err;
    }
    registry.markUnloaded(name);
    this.#desired.set(name, 'unloaded');
    entry.commit('unload', {});
    const jobs = this.#o.pool
      .list()
      .filter((w) => this.#hostedVersions(name, w.id).length > 0)
      .map((w) => this.#track(w, name, this.#unloadOn(w, name)));
    const failures = (await Promise.all(jobs)).filter((f) => f !== undefined).map((f) => f.text);
    if (failures.length > 0)
      this.#o.logger.warn({ model: name, failures }, 'some workers could not unload the model');
  }

  /**
   * Sets (or with {} clears) a name's traffic split (registry.setTraffic: INVALID_ARGUMENT or
   * MODEL_NOT_FOUND leave the old one), shared with other coordinators unless it came from one.
   */
  setTraffic(name: string, split: Record<string, number>, options: ControlChangeOptions = {}): void {
    const entry = options.replicated ? NO_ENTRY : (this.#o.journal?.()?.begin('traffic', name) ?? NO_ENTRY);
    try {
      this.#o.registry.setTraffic(name, split);
    } catch (err) {
      entry.abort();
      throw err;
    }
    entry.commit('set', { split: this.#o.registry.traffic(name) });
  }

  #isDeclared(name: string): boolean {
    return this.#o.registry.declared().some((m) => m.name === name);
  }

  #indexOf(name: string): RepositoryIndexEntry[] {
    return this.#o.registry.index().filter((e) => e.name === name);
  }

  /** Marks a control job of (worker, name) as running until it settles. */
  #track(
    worker: WorkerHandle,
    name: string,
    job: Promise<JobFailure | undefined>,
  ): Promise<JobFailure | undefined> {
    const key = `${worker.key}\0${name}`;
    this.#pending.set(key, (this.#pending.get(key) ?? 0) + 1);
    return job.finally(() => {
      const left = this.#pending.get(key)! - 1;
      if (left > 0) this.#pending.set(key, left);
      else this.#pending.delete(key);
    });
  }

  /** Versions of `name` a worker reports hosting. */
  #hostedVersions(name: string, workerId: string): string[] {
    const out: string[] = [];
    for (const e of this.#o.registry.allEntries())
      if (e.name === name && e.replicas.has(workerId)) out.push(e.version);
    return out;
  }

  /** Loads on one worker; resolves with a failure description, or undefined when all loaded. */
  async #loadOn(worker: WorkerHandle, configs: ModelConfig[]): Promise<JobFailure | undefined> {
    let statuses: ModelStatus[];
    try {
      statuses = await worker.control({ action: 'load', models: configs }, this.#o.loadTimeoutMs);
    } catch (err) {
      return failureOn(worker, err);
    }
    const failed = statuses.filter((s) => s.state !== 'ready');
    if (failed.length === 0) return undefined;
    return {
      text: failed
        .map((s) => `${worker.id}: ${s.name}@${s.version} ${s.state}${s.error ? ` (${s.error})` : ''}`)
        .join('; '),
      code: 'MODEL_LOAD_FAILED',
    };
  }

  async #unloadOn(worker: WorkerHandle, name: string, versions?: string[]): Promise<JobFailure | undefined> {
    try {
      await worker.control(
        { action: 'unload', name, ...(versions ? { versions } : {}) },
        this.#o.loadTimeoutMs,
      );
      return undefined;
    } catch (err) {
      return failureOn(worker, err);
    }
  }

  /**
   * Applies what operators asked for to a worker that joined or reported its models: unloads
   * what they unloaded, and for what they loaded, loads the served versions it lacks and
   * unloads versions no longer served.
   */
  #reconcile(worker: WorkerHandle): void {
    const { registry, logger } = this.#o;
    for (const [name, want] of this.#desired) {
      if (this.#pending.has(`${worker.key}\0${name}`)) continue;
      const hosted = this.#hostedVersions(name, worker.id);
      const jobs: Promise<JobFailure | undefined>[] = [];
      if (want === 'unloaded' && hosted.length > 0) jobs.push(this.#unloadOn(worker, name));
      if (want === 'loaded') {
        const served = registry.servedConfigs(name);
        const stale = hosted.filter((v) => !served.some((c) => c.version === v));
        if (stale.length > 0) jobs.push(this.#unloadOn(worker, name, stale));
        const missing = served.filter(
          (c) => !runsOnCoordinator(c) && placedOn(c, worker) && !hosted.includes(c.version),
        );
        if (missing.length > 0) jobs.push(this.#loadOn(worker, missing));
      }
      for (const job of jobs) {
        void this.#track(worker, name, job).then((failure) => {
          if (failure)
            logger.warn(
              { worker: worker.id, model: name, failure: failure.text },
              'could not bring a worker in line',
            );
        });
      }
    }
  }
}

function failureOn(worker: WorkerHandle, err: unknown): JobFailure {
  const error = toInfergridError(err);
  return { text: `${worker.id}: ${error.message}`, code: error.code };
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
