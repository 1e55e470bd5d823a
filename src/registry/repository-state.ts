/**
 * Repository state: what the operator has declared and asked for, and what that makes ready.
 * It holds every declared config (config file and run-time loads, served or not), the names
 * unloaded through the repository API and the names being loaded, and answers whether a
 * version can take requests and what the repository index shows.
 *
 * Readiness lives here, pipelines' included, because what holds a model back from being
 * ready is first the repository's state (an unloaded or loading name is never ready) and the
 * index reports it as READY/LOADING; the replicas it also needs come from the replica table.
 */

import {
  type ModelConfig,
  compareVersionsDesc,
  describePolicy,
  policyOf,
  runsOnCoordinator,
} from '../config/index.ts';
import { modelKey } from './model-key.ts';
import type { ModelEntry, ReplicaTable } from './replica-table.ts';

/** A model version's state as the repository index shows it (Triton's names). */
export type RepositoryState = 'READY' | 'LOADING' | 'UNAVAILABLE' | 'UNLOADING';

export interface RepositoryIndexEntry {
  name: string;
  version: string;
  state: RepositoryState;
  reason: string;
}

/** What repository state reads of the replica table. */
export type RepositoryReplicas = Pick<ReplicaTable, 'get' | 'versions' | 'entries' | 'hasReadyReplica'>;

export class ModelRepositoryState {
  readonly #replicas: RepositoryReplicas;
  /** Every declared model config (config file and run-time loads), served or not. */
  readonly #declared: ModelConfig[] = [];
  /** Names an operator unloaded (repository API): not served until loaded again. */
  readonly #unloaded = new Set<string>();
  /** Names being loaded through the repository API that were not ready before: not ready until the load ends. */
  readonly #loading = new Set<string>();

  constructor(replicas: RepositoryReplicas, models: readonly ModelConfig[] = []) {
    this.#replicas = replicas;
    for (const m of models) this.#declared.push(m);
  }

  /** Every declared config, served or not (run-time loads included), in declared order. */
  declared(): readonly ModelConfig[] {
    return this.#declared;
  }

  /** The declared configs of one name, in declared order. */
  declaredOf(name: string): ModelConfig[] {
    return this.#declared.filter((m) => m.name === name);
  }

  /** Whether a config declares this name (and version, when given). */
  isDeclared(name: string, version?: string): boolean {
    return this.#declared.some((m) => m.name === name && (version === undefined || m.version === version));
  }

  /**
   * Declares configs at run time (repository load), each replacing a declared config of the
   * same name@version, and serves `name` again if it was unloaded.
   */
  declare(configs: readonly ModelConfig[], name: string): void {
    for (const config of configs) {
      const i = this.#declared.findIndex((m) => m.name === config.name && m.version === config.version);
      if (i >= 0) this.#declared[i] = config;
      else this.#declared.push(config);
    }
    this.#unloaded.delete(name);
  }

  /** Forgets a name's declared configs and its unloaded mark, as if it had never been loaded. */
  forget(name: string): void {
    for (let i = this.#declared.length - 1; i >= 0; i--)
      if (this.#declared[i]!.name === name) this.#declared.splice(i, 1);
    this.#unloaded.delete(name);
  }

  /** Stops serving a name (repository unload) until it is declared again. */
  markUnloaded(name: string): void {
    this.#unloaded.add(name);
  }

  isUnloaded(name: string): boolean {
    return this.#unloaded.has(name);
  }

  /**
   * Marks a name as loading through the repository API: it reports not ready until every
   * placed worker has answered the load (`on` false), not just the first to finish.
   */
  setLoading(name: string, on: boolean): void {
    if (on) this.#loading.add(name);
    else this.#loading.delete(name);
  }

  isLoading(name: string): boolean {
    return this.#loading.has(name);
  }

  /**
   * Whether a request can be served: a model with a ready replica; a pipeline the coordinator
   * runs whose every step has a ready version it may go to (one that runs on its workers is a
   * model like any: a worker reports it ready). An unloaded or loading name is never ready.
   */
  isReady(entry: ModelEntry): boolean {
    if (this.#unloaded.has(entry.name) || this.#loading.has(entry.name)) return false;
    const pipeline = entry.config?.pipeline;
    if (runsOnCoordinator(entry.config) && pipeline) {
      return pipeline.steps.every((step) => {
        if (this.#unloaded.has(step.model)) return false;
        const versions = step.version !== undefined ? [step.version] : this.#replicas.versions(step.model);
        return versions.some((v) => {
          const e = this.#replicas.get(step.model, v);
          return e !== undefined && this.#replicas.hasReadyReplica(e);
        });
      });
    }
    return this.#replicas.hasReadyReplica(entry);
  }

  /**
   * Whether every served model has at least one ready replica (and there is at least one). A
   * name an operator unloaded is not served, so it does not hold readiness back; nor does one
   * an operator is loading.
   */
  allReady(): boolean {
    let any = false;
    for (const entry of this.#replicas.entries()) {
      if (this.#unloaded.has(entry.name) || this.#loading.has(entry.name)) continue;
      if (!this.isReady(entry)) return false;
      any = true;
    }
    return any;
  }

  /** The repository index: every declared or reported name@version with its state. */
  index(): RepositoryIndexEntry[] {
    const out: RepositoryIndexEntry[] = [];
    const seen = new Set<string>();
    const add = (name: string, version: string): void => {
      const key = modelKey(name, version);
      if (seen.has(key)) return;
      seen.add(key);
      const entry = this.#replicas.get(name, version);
      const unloaded = this.#unloaded.has(name);
      const replicas = entry ? [...entry.replicas.values()] : [];
      let state: RepositoryState;
      let reason = '';
      if (unloaded) {
        state = replicas.length > 0 ? 'UNLOADING' : 'UNAVAILABLE';
        reason = 'unloaded';
      } else if (!entry) {
        state = 'UNAVAILABLE';
        reason = `not served: the version policy serves ${describePolicy(policyOf(this.#declared, name))}`;
      } else if (this.isReady(entry)) {
        state = 'READY';
      } else if (this.#loading.has(name) || replicas.some((r) => r.state === 'loading')) {
        state = 'LOADING';
      } else {
        state = 'UNAVAILABLE';
        reason = runsOnCoordinator(entry.config)
          ? 'a step model has no ready replica'
          : (replicas.find((r) => r.error)?.error ??
            (replicas.length ? 'no replica is ready' : 'no worker hosts it'));
      }
      out.push({ name, version, state, reason });
    };
    for (const m of this.#declared) add(m.name, m.version);
    for (const e of this.#replicas.entries()) add(e.name, e.version);
    return out.sort((a, b) => a.name.localeCompare(b.name) || compareVersionsDesc(a.version, b.version));
  }
}
