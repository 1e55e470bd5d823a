/**
 * The replica table: which worker hosts which model version, in which state, and the schema
 * requests for each version are checked against. It keeps one entry per name@version while a
 * config serves that version (attach) or some worker still hosts it; an entry neither serves
 * nor hosts is forgotten. Nothing here knows about policies, traffic or the repository API.
 *
 * Entries are live objects: a caller that holds one sees its replicas and schema change. The
 * table writes them through its own record type; callers get the read-only ModelEntry view.
 */

import { createHash } from 'node:crypto';
import { type ModelConfig, compareVersionsDesc } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { LlmStatus, ModelState, ModelStatus } from '../protocol/index.ts';
import { modelKey } from './model-key.ts';
import type { ModelSchema } from './validate.ts';

/** A model version's schema and facts, as served. */
export interface ModelSpec extends ModelSchema {
  version: string;
  platform: string;
  quantized: boolean;
  /** Set for generative models (they stream and serve the OpenAI API). */
  llm?: LlmStatus | undefined;
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
  /** SHA-256 of the model file the replica loaded, when it has one. */
  readonly fingerprint: string | undefined;
}

/** One name@version: its config (while served), its current schema and its replicas. */
export interface ModelEntry {
  readonly name: string;
  readonly version: string;
  /** The declared config while the version is served; undefined once it is not (or never was). */
  readonly config: ModelConfig | undefined;
  /**
   * The schema requests are checked against: that of the longest-registered ready replica,
   * else the config's, else unknown.
   */
  readonly spec: ModelSpec | undefined;
  /** schemaKey of `spec` when it came from a replica; requests go only to replicas with it. */
  readonly specKey: string | undefined;
  /** workerId -> its replica, in registration order. */
  readonly replicas: ReadonlyMap<string, Replica>;
  /**
   * What the version's answers come from: a hash of its config and of the model files its
   * replicas loaded. Cache keys carry it, so a reload with another config or file (or a restart
   * after one) never meets an answer the old model gave, in any cache tier.
   */
  readonly generation: string;
}

/** The table's own, writable form of an entry. */
interface EntryRecord {
  readonly name: string;
  readonly version: string;
  config: ModelConfig | undefined;
  spec: ModelSpec | undefined;
  specKey: string | undefined;
  readonly replicas: Map<string, Replica>;
  generation: string;
}

/** See ModelEntry.generation. */
function generationOf(entry: EntryRecord): string {
  const files = new Set<string>();
  for (const r of entry.replicas.values()) if (r.fingerprint !== undefined) files.add(r.fingerprint);
  return createHash('sha256')
    .update(JSON.stringify(entry.config ?? null))
    .update('\0')
    .update([...files].sort().join(','))
    .digest('hex')
    .slice(0, 32);
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

export class ReplicaTable {
  readonly #entries = new Map<string, EntryRecord>();
  /** name -> versions that have an entry, newest first. */
  readonly #versions = new Map<string, string[]>();

  /**
   * Serves name@version with `config`: creates its entry, or gives the existing entry this
   * config (a run-time load replaced it: its schema is the new config's until a replica reports).
   */
  attach(config: ModelConfig): ModelEntry {
    const entry = this.#entry(config.name, config.version, config);
    if (entry.config !== config) {
      entry.config = config;
      this.#refresh(entry);
    }
    return entry;
  }

  /**
   * name@version is no longer served (a newer version arrived under "latest N", or the name was
   * forgotten): its entry drops the config and is forgotten once no worker hosts it.
   */
  detach(name: string, version: string): void {
    const entry = this.#entries.get(modelKey(name, version));
    if (!entry) return;
    entry.config = undefined;
    this.#refresh(entry);
  }

  /** Records what a worker hosts, replacing what it reported before. */
  setWorkerModels(workerId: string, models: readonly ModelStatus[]): void {
    const touched = new Set<EntryRecord>();
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
        ...(m.llm ? { llm: m.llm } : {}),
      };
      entry.replicas.set(workerId, {
        state: m.state,
        error: m.error,
        spec,
        schemaKey: schemaKeyOf(spec),
        fingerprint: m.fingerprint,
      });
      touched.add(entry);
    }
    for (const entry of touched) this.#refresh(entry);
  }

  /** Updates one replica's state (from a heartbeat); whether anything changed. */
  setReplicaState(workerId: string, name: string, version: string, state: ModelState): boolean {
    const entry = this.#entries.get(modelKey(name, version));
    const replica = entry?.replicas.get(workerId);
    if (!entry || !replica || replica.state === state) return false;
    entry.replicas.set(workerId, { ...replica, state });
    this.#refresh(entry);
    return true;
  }

  removeWorker(workerId: string): void {
    this.setWorkerModels(workerId, []);
  }

  get(name: string, version: string): ModelEntry | undefined {
    return this.#entries.get(modelKey(name, version));
  }

  /** The versions of a name that have an entry, newest first; empty when unknown. */
  versions(name: string): readonly string[] {
    return this.#versions.get(name) ?? [];
  }

  /** Every name with an entry, in the order they first got one. */
  names(): string[] {
    return [...this.#versions.keys()];
  }

  /** Every entry, in the order they were created. */
  entries(): IterableIterator<ModelEntry> {
    return this.#entries.values();
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

  /** Whether any worker has the version ready, whatever schema it reports. */
  hasReadyReplica(entry: ModelEntry): boolean {
    for (const r of entry.replicas.values()) if (r.state === 'ready') return true;
    return false;
  }

  #entry(name: string, version: string, config?: ModelConfig): EntryRecord {
    const key = modelKey(name, version);
    let entry = this.#entries.get(key);
    if (!entry) {
      const spec = config ? specFromConfig(config) : undefined;
      entry = { name, version, config, spec, specKey: undefined, replicas: new Map(), generation: '' };
      entry.generation = generationOf(entry);
      this.#entries.set(key, entry);
      const versions = this.#versions.get(name) ?? [];
      versions.push(version);
      versions.sort(compareVersionsDesc);
      this.#versions.set(name, versions);
    }
    return entry;
  }

  /** Recomputes an entry's schema from its replicas; forgets an unserved entry nobody hosts. */
  #refresh(entry: EntryRecord): void {
    if (!entry.config && entry.replicas.size === 0) {
      this.#entries.delete(modelKey(entry.name, entry.version));
      const versions = (this.#versions.get(entry.name) ?? []).filter((v) => v !== entry.version);
      if (versions.length > 0) this.#versions.set(entry.name, versions);
      else this.#versions.delete(entry.name);
      return;
    }
    entry.generation = generationOf(entry);
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
}
