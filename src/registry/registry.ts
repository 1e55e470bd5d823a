/**
 * The model registry as the coordinator sees it: models declared in config, merged with what
 * each worker reports it hosts (schema from the backend itself, state per replica). Requests
 * are resolved and validated against it; the router asks it which workers have a model ready.
 */

import { EventEmitter } from 'node:events';
import {
  type ModelConfig,
  type VersionPolicy,
  compareVersionsDesc,
  describePolicy,
  policyOf,
  servedModels,
} from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { ModelState, ModelStatus } from '../protocol/index.ts';
import type { ModelSchema } from './validate.ts';
import { modelKey } from './model-key.ts';

/** A model version's schema and facts, as served. */
export interface ModelSpec extends ModelSchema {
  version: string;
  platform: string;
  quantized: boolean;
}

/** One worker's copy of a model, as that worker last reported it. */
export interface Replica {
  readonly state: ModelState;
  /** Why the model is unavailable there, when the worker says so. */
  readonly error: string | undefined;
  /** The schema this replica's backend reports. */
  readonly spec: ModelSpec;
  /** Identity of that schema, to tell replicas that agree from those that do not. */
  readonly schemaKey: string;
}

/** One name@version: its config (if declared), its current schema and its replicas. */
export interface ModelEntry {
  readonly name: string;
  readonly version: string;
  readonly config: ModelConfig | undefined;
  /**
   * The schema requests are checked against: that of the longest-registered ready replica,
   * else the config's, else unknown.
   */
  spec: ModelSpec | undefined;
  /** schemaKey of `spec` when it came from a replica; requests go only to replicas with it. */
  specKey: string | undefined;
  /** workerId -> its replica, in registration order. */
  readonly replicas: Map<string, Replica>;
}

function schemaKeyOf(spec: ModelSpec): string {
  return JSON.stringify([spec.inputs, spec.outputs, spec.batchable, spec.maxBatchSize]);
}

function specFromConfig(m: ModelConfig): ModelSpec | undefined {
  if (!m.inputs || !m.outputs) return undefined;
  return {
    name: m.name,
    version: m.version,
    platform: `infergrid_${m.backend}`,
    inputs: m.inputs,
    outputs: m.outputs,
    batchable: m.batchable,
    maxBatchSize: m.maxBatchSize,
    quantized: m.quantized,
  };
}

export interface ModelRegistryEvents {
  /** Some replica's state or some model's schema changed. */
  changed: [];
  /** A worker reported the whole list of models it hosts (on joining, after a load or unload). */
  'worker-models': [workerId: string];
}

/** A model version's state as the repository index shows it (Triton's names). */
export type RepositoryState = 'READY' | 'LOADING' | 'UNAVAILABLE' | 'UNLOADING';

export interface RepositoryIndexEntry {
  name: string;
  version: string;
  state: RepositoryState;
  reason: string;
}

export class ModelRegistry extends EventEmitter<ModelRegistryEvents> {
  readonly #entries = new Map<string, ModelEntry>();
  /** name -> served versions, newest first. */
  readonly #versions = new Map<string, string[]>();
  /** Every declared model config (config file and run-time loads), served or not. */
  readonly #declared: ModelConfig[] = [];
  /** Names an operator unloaded (repository API): not served until loaded again. */
  readonly #unloaded = new Set<string>();
  /** Names being loaded through the repository API that were not ready before: not ready until the load ends. */
  readonly #loading = new Set<string>();
  /** name -> version -> share of unversioned requests (a canary split). */
  readonly #traffic = new Map<string, Map<string, number>>();
  readonly #random: () => number;

  constructor(models: readonly ModelConfig[], options: { random?: () => number } = {}) {
    super();
    this.#random = options.random ?? Math.random;
    for (const m of models) this.#declared.push(m);
    for (const name of new Set(models.map((m) => m.name))) this.#serve(name);
  }

  /** (Re)creates the entries of a name's served versions from its declared configs and policy. */
  #serve(name: string): void {
    const declared = this.#declared.filter((m) => m.name === name);
    const served = new Set(servedModels(declared).map((m) => m.version));
    for (const m of declared) {
      if (!served.has(m.version)) {
        // no longer served (a newer version arrived under "latest N"): forgotten once no worker hosts it
        const stale = this.#entries.get(modelKey(m.name, m.version));
        if (stale) {
          (stale as { config: ModelConfig | undefined }).config = undefined;
          this.#refresh(stale);
        }
        continue;
      }
      const entry = this.#entry(m.name, m.version, m);
      if (entry.config !== m) {
        // a run-time load replaced the config: its schema is the new one until replicas report
        (entry as { config: ModelConfig }).config = m;
        this.#refresh(entry);
      }
    }
    const split = new Map<string, number>();
    for (const m of declared)
      if (m.traffic !== undefined && served.has(m.version)) split.set(m.version, m.traffic);
    if (split.size > 0) this.#traffic.set(name, split);
    else this.#traffic.delete(name);
  }

  #entry(name: string, version: string, config?: ModelConfig): ModelEntry {
    const key = modelKey(name, version);
    let entry = this.#entries.get(key);
    if (!entry) {
      const spec = config ? specFromConfig(config) : undefined;
      entry = { name, version, config, spec, specKey: undefined, replicas: new Map() };
      this.#entries.set(key, entry);
      const versions = this.#versions.get(name) ?? [];
      versions.push(version);
      versions.sort(compareVersionsDesc);
      this.#versions.set(name, versions);
    }
    return entry;
  }

  /** Recomputes an entry's schema from its replicas; forgets an undeclared entry nobody hosts. */
  #refresh(entry: ModelEntry): void {
    if (!entry.config && entry.replicas.size === 0) {
      this.#entries.delete(modelKey(entry.name, entry.version));
      const versions = (this.#versions.get(entry.name) ?? []).filter((v) => v !== entry.version);
      if (versions.length > 0) this.#versions.set(entry.name, versions);
      else this.#versions.delete(entry.name);
      return;
    }
    for (const replica of entry.replicas.values()) {
      if (replica.state === 'ready') {
        entry.spec = replica.spec;
        entry.specKey = replica.schemaKey;
        return;
      }
    }
    entry.spec = entry.config ? specFromConfig(entry.config) : undefined;
    entry.specKey = undefined;
  }

  /** Records what a worker hosts, replacing what it reported before. */
  setWorkerModels(workerId: string, models: readonly ModelStatus[]): void {
    const touched = new Set<ModelEntry>();
    for (const entry of this.#entries.values()) {
      if (entry.replicas.delete(workerId)) touched.add(entry);
    }
    for (const m of models) {
      const entry = this.#entry(m.name, m.version);
      const spec: ModelSpec = {
        name: m.name,
        version: m.version,
        platform: m.platform,
        inputs: m.inputs,
        outputs: m.outputs,
        batchable: m.batchable,
        maxBatchSize: m.maxBatchSize,
        quantized: entry.config?.quantized ?? false,
      };
      entry.replicas.set(workerId, { state: m.state, error: m.error, spec, schemaKey: schemaKeyOf(spec) });
      touched.add(entry);
    }
    for (const entry of touched) this.#refresh(entry);
    this.emit('changed');
    this.emit('worker-models', workerId);
  }

  /** Updates one replica's state (from a heartbeat). */
  setReplicaState(workerId: string, name: string, version: string, state: ModelState): void {
    const entry = this.#entries.get(modelKey(name, version));
    const replica = entry?.replicas.get(workerId);
    if (!entry || !replica || replica.state === state) return;
    entry.replicas.set(workerId, { ...replica, state });
    this.#refresh(entry);
    this.emit('changed');
  }

  removeWorker(workerId: string): void {
    this.setWorkerModels(workerId, []);
  }

  /**
   * Whether every served model has at least one ready replica (and there is at least one). A
   * name an operator unloaded is not served, so it does not hold readiness back.
   */
  allReady(): boolean {
    let any = false;
    for (const entry of this.entries()) {
      // a model an operator is loading does not make the whole server unready
      if (this.#loading.has(entry.name)) continue;
      if (!this.isReady(entry)) return false;
      any = true;
    }
    return any;
  }

  /** The versions of a model, newest first; empty when unknown. */
  versions(name: string): readonly string[] {
    return this.#versions.get(name) ?? [];
  }

  /**
   * Finds the entry a request means: the given version, or the newest version when none is
   * given. MODEL_NOT_FOUND names what exists.
   */
  resolve(name: string, version?: string): ModelEntry {
    const versions = this.#versions.get(name);
    if (this.#unloaded.has(name)) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" is unloaded; POST /v2/repository/models/${name}/load to serve it again`,
      );
    }
    if (!versions?.length) {
      const known = [...this.#versions.keys()].sort();
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" is not served here${known.length ? ` (models: ${known.join(', ')})` : ''}`,
      );
    }
    const chosen = version ?? versions[0]!;
    const entry = this.#entries.get(modelKey(name, chosen));
    if (!entry && this.#declared.some((m) => m.name === name && m.version === chosen)) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" version "${chosen}" is not served: its version policy serves ${describePolicy(this.policy(name))} (served: ${versions.join(', ')})`,
      );
    }
    if (!entry) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" has no version "${chosen}" (versions: ${versions.join(', ')})`,
      );
    }
    return entry;
  }

  /**
   * The entry an inference request goes to: the version it names, else one drawn from the
   * name's traffic split (versions that are ready first; `key` in [0, 1) instead of a random
   * draw keeps a client on one version), else the newest served version.
   */
  route(name: string, version?: string, key?: number): ModelEntry {
    const split = version === undefined ? this.#traffic.get(name) : undefined;
    if (!split || this.#unloaded.has(name)) return this.resolve(name, version);
    let candidates = [...split].filter(([, w]) => w > 0);
    const ready = candidates.filter(([v]) => {
      const e = this.#entries.get(modelKey(name, v));
      return e !== undefined && this.isReady(e);
    });
    if (ready.length > 0) candidates = ready;
    if (candidates.length === 0) return this.resolve(name);
    const total = candidates.reduce((sum, [, w]) => sum + w, 0);
    let point = (key ?? this.#random()) * total;
    for (const [v, w] of candidates) {
      point -= w;
      if (point < 0) return this.resolve(name, v);
    }
    return this.resolve(name, candidates[candidates.length - 1]![0]);
  }

  /** The version policy of a name. */
  policy(name: string): VersionPolicy {
    return policyOf(this.#declared, name);
  }

  /** The traffic split of a name (version -> share), empty when none is set. */
  traffic(name: string): Record<string, number> {
    return Object.fromEntries(this.#traffic.get(name) ?? []);
  }

  /**
   * Sets (or with an empty object, clears) a name's traffic split. Every version must be
   * served and the shares must add up to more than 0.
   */
  setTraffic(name: string, split: Record<string, number>): void {
    const versions = this.versions(name);
    if (versions.length === 0) this.resolve(name); // MODEL_NOT_FOUND naming what exists
    const entries = Object.entries(split);
    for (const [v, w] of entries) {
      if (!versions.includes(v))
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `model "${name}" has no served version "${v}" (served: ${versions.join(', ')})`,
        );
      if (typeof w !== 'number' || !Number.isFinite(w) || w < 0 || w > 100)
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `the share of version "${v}" must be a number from 0 to 100, got ${JSON.stringify(w)}`,
        );
    }
    if (entries.length > 0 && entries.every(([, w]) => w === 0))
      throw new InfergridError('INVALID_ARGUMENT', 'at least one version needs a share above 0');
    if (entries.length === 0) this.#traffic.delete(name);
    else this.#traffic.set(name, new Map(entries));
    this.emit('changed');
  }

  /** Every declared config, served or not (run-time loads included). */
  declared(): readonly ModelConfig[] {
    return this.#declared;
  }

  /** Whether an operator unloaded this name. */
  isUnloaded(name: string): boolean {
    return this.#unloaded.has(name);
  }

  /**
   * Declares a model at run time (repository load), replacing a declared config of the same
   * name@version, and serves the name again if it was unloaded. Returns the served configs of
   * that name (what workers should load).
   */
  declare(configs: readonly ModelConfig[], name: string): ModelConfig[] {
    for (const config of configs) {
      const i = this.#declared.findIndex((m) => m.name === config.name && m.version === config.version);
      if (i >= 0) this.#declared[i] = config;
      else this.#declared.push(config);
    }
    this.#unloaded.delete(name);
    this.#serve(name);
    this.emit('changed');
    return this.servedConfigs(name);
  }

  /**
   * The configs of a name's served versions, by its version policy (not by the entries: a
   * version the policy no longer serves keeps its entry while a worker still hosts it).
   */
  servedConfigs(name: string): ModelConfig[] {
    return servedModels(this.#declared.filter((m) => m.name === name));
  }

  /**
   * Marks a name as loading through the repository API: it reports not ready until every
   * placed worker has answered the load (`on` false), not just the first to finish.
   */
  setLoading(name: string, on: boolean): void {
    if (on) this.#loading.add(name);
    else this.#loading.delete(name);
    this.emit('changed');
  }

  /**
   * Forgets a name declared at run time whose load failed everywhere, as if it had never been
   * loaded (entries with replicas stay until their workers let go).
   */
  forget(name: string): void {
    for (let i = this.#declared.length - 1; i >= 0; i--)
      if (this.#declared[i]!.name === name) this.#declared.splice(i, 1);
    this.#traffic.delete(name);
    this.#unloaded.delete(name);
    for (const entry of [...this.#entries.values()]) {
      if (entry.name !== name) continue;
      (entry as { config: ModelConfig | undefined }).config = undefined;
      this.#refresh(entry);
    }
    this.emit('changed');
  }

  /** Stops serving a name (repository unload); requests for it get MODEL_NOT_FOUND saying so. */
  markUnloaded(name: string): void {
    if (!this.#declared.some((m) => m.name === name) && !this.#versions.has(name)) this.resolve(name);
    this.#unloaded.add(name);
    this.emit('changed');
  }

  /** The repository index: every declared or reported name@version with its state. */
  index(): RepositoryIndexEntry[] {
    const out: RepositoryIndexEntry[] = [];
    const seen = new Set<string>();
    const add = (name: string, version: string): void => {
      const key = modelKey(name, version);
      if (seen.has(key)) return;
      seen.add(key);
      const entry = this.#entries.get(key);
      const unloaded = this.#unloaded.has(name);
      const replicas = entry ? [...entry.replicas.values()] : [];
      let state: RepositoryState;
      let reason = '';
      if (unloaded) {
        state = replicas.length > 0 ? 'UNLOADING' : 'UNAVAILABLE';
        reason = 'unloaded';
      } else if (!entry) {
        state = 'UNAVAILABLE';
        reason = `not served: the version policy serves ${describePolicy(this.policy(name))}`;
      } else if (this.isReady(entry)) {
        state = 'READY';
      } else if (this.#loading.has(name) || replicas.some((r) => r.state === 'loading')) {
        state = 'LOADING';
      } else {
        state = 'UNAVAILABLE';
        reason =
          entry.config?.backend === 'pipeline'
            ? 'a step model has no ready replica'
            : (replicas.find((r) => r.error)?.error ??
              (replicas.length ? 'no replica is ready' : 'no worker hosts it'));
      }
      out.push({ name, version, state, reason });
    };
    for (const m of this.#declared) add(m.name, m.version);
    for (const e of this.#entries.values()) add(e.name, e.version);
    return out.sort((a, b) => a.name.localeCompare(b.name) || compareVersionsDesc(a.version, b.version));
  }

  /** The entry's schema, or UNAVAILABLE when no replica has reported it and config declares none. */
  specOf(entry: ModelEntry): ModelSpec {
    if (entry.spec) return entry.spec;
    throw new InfergridError(
      'UNAVAILABLE',
      `model "${entry.name}" version "${entry.version}" has no loaded replica yet, so its schema is not known`,
    );
  }

  /**
   * Ids of the workers that have the model ready with the schema requests are validated
   * against (a replica that reports another schema gets no traffic it would refuse).
   */
  readyReplicas(entry: ModelEntry): string[] {
    const ids: string[] = [];
    for (const [id, r] of entry.replicas)
      if (r.state === 'ready' && r.schemaKey === entry.specKey) ids.push(id);
    return ids;
  }

  /**
   * Whether a request can be served: a model with a ready replica; a pipeline whose every
   * step has a ready version it may go to. An unloaded name is never ready.
   */
  isReady(entry: ModelEntry): boolean {
    if (this.#unloaded.has(entry.name) || this.#loading.has(entry.name)) return false;
    const pipeline = entry.config?.pipeline;
    if (entry.config?.backend === 'pipeline' && pipeline) {
      return pipeline.steps.every((step) => {
        if (this.#unloaded.has(step.model)) return false;
        const versions = step.version !== undefined ? [step.version] : this.versions(step.model);
        return versions.some((v) => {
          const e = this.#entries.get(modelKey(step.model, v));
          return e !== undefined && this.#hasReadyReplica(e);
        });
      });
    }
    return this.#hasReadyReplica(entry);
  }

  #hasReadyReplica(entry: ModelEntry): boolean {
    for (const r of entry.replicas.values()) if (r.state === 'ready') return true;
    return false;
  }

  /** Every entry, an unloaded name's included (they keep replicas until workers let go). */
  allEntries(): IterableIterator<ModelEntry> {
    return this.#entries.values();
  }

  /** The served entries (an unloaded name's are left out). */
  *entries(): IterableIterator<ModelEntry> {
    for (const e of this.#entries.values()) if (!this.#unloaded.has(e.name)) yield e;
  }
}
