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

/** One name@version: its config (if declared), its schema (once known) and its replicas. */
export interface ModelEntry {
  readonly name: string;
  readonly version: string;
  readonly config: ModelConfig | undefined;
  spec: ModelSpec | undefined;
  /** Whether `spec` came from a worker's backend (it then wins over the config's). */
  specFromWorker: boolean;
  /** workerId -> the state that worker reports. */
  readonly replicas: Map<string, ModelState>;
  /** workerId -> why the model is unavailable there, when a worker says so. */
  readonly replicaErrors: Map<string, string>;
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
      entry = {
        name,
        version,
        config,
        spec: config ? specFromConfig(config) : undefined,
        specFromWorker: false,
        replicas: new Map(),
        replicaErrors: new Map(),
      };
      this.#entries.set(key, entry);
      const versions = this.#versions.get(name) ?? [];
      versions.push(version);
      versions.sort(compareVersionsDesc);
      this.#versions.set(name, versions);
    }
    return entry;
  }

  /** Records what a worker hosts, replacing what it reported before. */
  setWorkerModels(workerId: string, models: readonly ModelStatus[]): void {
    this.#removeReplicas(workerId);
    for (const m of models) {
      const entry = this.#entry(m.name, m.version);
      entry.replicas.set(workerId, m.state);
      if (m.error) entry.replicaErrors.set(workerId, m.error);
      // the backend's own schema wins over the config's once a replica has loaded the model
      if (m.state === 'ready' && !entry.specFromWorker) {
        entry.specFromWorker = true;
        entry.spec = {
          name: m.name,
          version: m.version,
          platform: m.platform,
          inputs: m.inputs,
          outputs: m.outputs,
          batchable: m.batchable,
          maxBatchSize: m.maxBatchSize,
          quantized: entry.config?.quantized ?? false,
        };
      }
    }
    this.emit('changed');
  }

  /** Updates one replica's state (from a heartbeat). */
  setReplicaState(workerId: string, name: string, version: string, state: ModelState): void {
    const entry = this.#entries.get(modelKey(name, version));
    if (entry?.replicas.has(workerId) && entry.replicas.get(workerId) !== state) {
      entry.replicas.set(workerId, state);
      this.emit('changed');
    }
  }

  removeWorker(workerId: string): void {
    this.#removeReplicas(workerId);
    this.emit('changed');
  }

  #removeReplicas(workerId: string): void {
    for (const entry of this.#entries.values()) {
      entry.replicas.delete(workerId);
      entry.replicaErrors.delete(workerId);
    }
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

  /** Ids of the workers that report the model ready. */
  readyReplicas(entry: ModelEntry): string[] {
    const ids: string[] = [];
    for (const [id, state] of entry.replicas) if (state === 'ready') ids.push(id);
    return ids;
  }

  isReady(entry: ModelEntry): boolean {
    for (const state of entry.replicas.values()) if (state === 'ready') return true;
    return false;
  }

  entries(): IterableIterator<ModelEntry> {
    return this.#entries.values();
  }
}
