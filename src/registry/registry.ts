/**
 * The model registry as the coordinator sees it: models declared in config, merged with what
 * each worker reports it hosts (schema from the backend itself, state per replica). Requests
 * are resolved and validated against it; the router asks it which workers have a model ready.
 */

import { EventEmitter } from 'node:events';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { ModelState, ModelStatus } from '../protocol/index.ts';
import type { ModelSchema } from './validate.ts';

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

export function modelKey(name: string, version: string): string {
  return `${name}@${version}`;
}

/**
 * Orders versions newest first: numeric labels by number, before any other label; other
 * labels in descending string order. (A total order, whatever order versions are declared in.)
 */
export function compareVersionsDesc(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  const aNumeric = a.trim() !== '' && Number.isFinite(na);
  const bNumeric = b.trim() !== '' && Number.isFinite(nb);
  if (aNumeric && bNumeric) return nb - na || b.localeCompare(a);
  if (aNumeric !== bNumeric) return aNumeric ? -1 : 1;
  return b.localeCompare(a);
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
}

export class ModelRegistry extends EventEmitter<ModelRegistryEvents> {
  readonly #entries = new Map<string, ModelEntry>();
  /** name -> versions, newest first. */
  readonly #versions = new Map<string, string[]>();

  constructor(models: readonly ModelConfig[]) {
    super();
    for (const m of models) this.#entry(m.name, m.version, m);
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

  /** Whether every model known has at least one ready replica (and there is at least one model). */
  allReady(): boolean {
    let any = false;
    for (const entry of this.#entries.values()) {
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
    if (!versions?.length) {
      const known = [...this.#versions.keys()].sort();
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" is not served here${known.length ? ` (models: ${known.join(', ')})` : ''}`,
      );
    }
    const chosen = version ?? versions[0]!;
    const entry = this.#entries.get(modelKey(name, chosen));
    if (!entry) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" has no version "${chosen}" (versions: ${versions.join(', ')})`,
      );
    }
    return entry;
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

  isReady(entry: ModelEntry): boolean {
    for (const r of entry.replicas.values()) if (r.state === 'ready') return true;
    return false;
  }

  entries(): IterableIterator<ModelEntry> {
    return this.#entries.values();
  }
}
