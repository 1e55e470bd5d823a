/**
 * The model registry as the coordinator sees it: models declared in config, merged with what
 * each worker reports it hosts (schema from the backend itself, state per replica). Requests
 * are resolved and validated against it; the router asks it which workers have a model ready.
 *
 * It is a thin composition of three parts, each its own idea: the replica table (which worker
 * has which version in which state), version routing (policy, served versions, traffic split)
 * and repository state (declared configs, unloaded and loading names, readiness). It keeps
 * them in step when configs are declared or forgotten, and emits `changed` after every change.
 */

import { EventEmitter } from 'node:events';
import { type ModelConfig, type VersionPolicy, runsOnCoordinator } from '../config/index.ts';
import type { ModelState, ModelStatus } from '../protocol/index.ts';
import { type ModelEntry, type ModelSpec, ReplicaTable } from './replica-table.ts';
import { ModelRepositoryState, type RepositoryIndexEntry } from './repository-state.ts';
import { VersionRouter } from './version-router.ts';

/** Whether a model's placement (its `workers:`, which `pool:` expands into) puts it on this worker; none: every worker. */
export function isPlacedOn(config: ModelConfig, workerId: string): boolean {
  return !config.workers || config.workers.includes(workerId);
}

export interface ModelRegistryEvents {
  /** Some replica's state, some model's schema, a split or the repository state changed. */
  changed: [];
  /** A worker reported the whole list of models it hosts (on joining, after a load or unload). */
  'worker-models': [workerId: string];
}

export interface ModelRegistryOptions {
  /** Draws in [0, 1) for the traffic split. Default Math.random. */
  random?: () => number;
}

export class ModelRegistry extends EventEmitter<ModelRegistryEvents> {
  readonly #replicas = new ReplicaTable();
  readonly #repository: ModelRepositoryState;
  readonly #versions: VersionRouter;

  constructor(models: readonly ModelConfig[], options: ModelRegistryOptions = {}) {
    super();
    this.#repository = new ModelRepositoryState(this.#replicas, models);
    this.#versions = new VersionRouter({
      replicas: this.#replicas,
      repository: this.#repository,
      random: options.random,
    });
    for (const name of new Set(models.map((m) => m.name))) this.#serve(name);
  }

  /** (Re)creates the entries of a name's served versions from its declared configs and policy. */
  #serve(name: string): void {
    const { served, unserved } = this.#versions.applyDeclared(name);
    // no longer served (a newer version arrived under "latest N"): forgotten once no worker hosts it
    for (const m of unserved) this.#replicas.detach(m.name, m.version);
    for (const m of served) this.#replicas.attach(m);
  }

  // ---------------------------------------------------------------- replicas

  /** Records what a worker hosts, replacing what it reported before. */
  setWorkerModels(workerId: string, models: readonly ModelStatus[]): void {
    this.#replicas.setWorkerModels(workerId, models);
    this.emit('changed');
    this.emit('worker-models', workerId);
  }

  /** Updates one replica's state (from a heartbeat). */
  setReplicaState(workerId: string, name: string, version: string, state: ModelState): void {
    if (this.#replicas.setReplicaState(workerId, name, version, state)) this.emit('changed');
  }

  removeWorker(workerId: string): void {
    this.setWorkerModels(workerId, []);
  }

  /** The versions of a model that have an entry, newest first; empty when unknown. */
  versions(name: string): readonly string[] {
    return this.#replicas.versions(name);
  }

  /** The entry's schema, or UNAVAILABLE when no replica has reported it and config declares none. */
  specOf(entry: ModelEntry): ModelSpec {
    return this.#replicas.specOf(entry);
  }

  /** Ids of the workers that have the model ready with the schema requests are validated against. */
  readyReplicas(entry: ModelEntry): string[] {
    return this.#replicas.readyReplicas(entry);
  }

  /** Every entry, an unloaded name's included (they keep replicas until workers let go). */
  allEntries(): IterableIterator<ModelEntry> {
    return this.#replicas.entries();
  }

  /** The served entries (an unloaded name's are left out). */
  *entries(): IterableIterator<ModelEntry> {
    for (const e of this.#replicas.entries()) if (!this.#repository.isUnloaded(e.name)) yield e;
  }

  // ---------------------------------------------------------------- versions and traffic

  /** The entry a request names (its version, else the newest); MODEL_NOT_FOUND names what exists. */
  resolve(name: string, version?: string): ModelEntry {
    return this.#versions.resolve(name, version);
  }

  /** The entry an inference request goes to: its version, else the traffic split's draw, else the newest. */
  route(name: string, version?: string, key?: number): ModelEntry {
    return this.#versions.route(name, version, key);
  }

  /** The version policy of a name. */
  policy(name: string): VersionPolicy {
    return this.#versions.policy(name);
  }

  /** The configs of a name's served versions, by its version policy. */
  servedConfigs(name: string): ModelConfig[] {
    return this.#versions.servedConfigs(name);
  }

  /** The traffic split of a name (version -> share), empty when none is set. */
  traffic(name: string): Record<string, number> {
    return this.#versions.traffic(name);
  }

  /** Sets (or with an empty object, clears) a name's traffic split; INVALID_ARGUMENT leaves the old one. */
  setTraffic(name: string, split: Record<string, number>): void {
    this.#versions.setTraffic(name, split);
    this.emit('changed');
  }

  // ---------------------------------------------------------------- repository

  /** Every declared config, served or not (run-time loads included). */
  declared(): readonly ModelConfig[] {
    return this.#repository.declared();
  }

  /**
   * Whether this coordinator places name@version on a worker: a declared config (the config
   * file's, or one loaded at run time) placed on it. A worker's reports are trusted for these
   * only; a worker cannot make itself a replica of a model by saying it hosts it.
   */
  placesOn(workerId: string, name: string, version: string): boolean {
    return this.declared().some(
      (c) => c.name === name && c.version === version && !runsOnCoordinator(c) && isPlacedOn(c, workerId),
    );
  }

  /** Whether an operator unloaded this name. */
  isUnloaded(name: string): boolean {
    return this.#repository.isUnloaded(name);
  }

  /**
   * Declares a model at run time (repository load), replacing a declared config of the same
   * name@version, and serves the name again if it was unloaded. Returns the served configs of
   * that name (what workers should load).
   */
  declare(configs: readonly ModelConfig[], name: string): ModelConfig[] {
    this.#repository.declare(configs, name);
    this.#serve(name);
    this.emit('changed');
    return this.servedConfigs(name);
  }

  /** Marks a name as loading through the repository API (not ready until `on` is false again). */
  setLoading(name: string, on: boolean): void {
    this.#repository.setLoading(name, on);
    this.emit('changed');
  }

  /**
   * Forgets a name declared at run time whose load failed everywhere, as if it had never been
   * loaded (entries with replicas stay until their workers let go).
   */
  forget(name: string): void {
    this.#repository.forget(name);
    this.#versions.clearTraffic(name);
    for (const version of [...this.#replicas.versions(name)]) this.#replicas.detach(name, version);
    this.emit('changed');
  }

  /** Stops serving a name (repository unload); requests for it get MODEL_NOT_FOUND saying so. */
  markUnloaded(name: string): void {
    if (!this.#repository.isDeclared(name) && this.#replicas.versions(name).length === 0)
      this.#versions.resolve(name); // MODEL_NOT_FOUND naming what exists
    this.#repository.markUnloaded(name);
    this.emit('changed');
  }

  /** Whether a request can be served: a ready replica, or for a pipeline the coordinator runs every step ready. */
  isReady(entry: ModelEntry): boolean {
    return this.#repository.isReady(entry);
  }

  /** Whether every served model has a ready replica (and there is at least one). */
  allReady(): boolean {
    return this.#repository.allReady();
  }

  /** The repository index: every declared or reported name@version with its state. */
  index(): RepositoryIndexEntry[] {
    return this.#repository.index();
  }
}
