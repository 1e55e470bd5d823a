/**
 * Version routing: which versions of a name are served (its version policy over the declared
 * configs), which version a request means, and the traffic split (a canary) that draws the
 * version of a request that names none.
 *
 * A split set at run time (setTraffic) lasts until the name's configs are declared again:
 * then the shares the configs state win, as they did when the coordinator started.
 */

import {
  type ModelConfig,
  type VersionPolicy,
  describePolicy,
  policyOf,
  servedModels,
} from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { ModelEntry, ReplicaTable } from './replica-table.ts';
import type { ModelRepositoryState } from './repository-state.ts';

/** What version routing reads of the replica table. */
export type VersionReplicas = Pick<ReplicaTable, 'get' | 'versions' | 'names'>;

/** What version routing reads of the repository state. */
export type VersionRepository = Pick<
  ModelRepositoryState,
  'declaredOf' | 'isDeclared' | 'isUnloaded' | 'isReady'
>;

export interface VersionRouterOptions {
  replicas: VersionReplicas;
  repository: VersionRepository;
  /** Draws in [0, 1) for requests without a key. Default Math.random. */
  random?: (() => number) | undefined;
}

export class VersionRouter {
  readonly #replicas: VersionReplicas;
  readonly #repository: VersionRepository;
  readonly #random: () => number;
  /** name -> version -> share of unversioned requests (a canary split). */
  readonly #traffic = new Map<string, Map<string, number>>();

  constructor(options: VersionRouterOptions) {
    this.#replicas = options.replicas;
    this.#repository = options.repository;
    this.#random = options.random ?? Math.random;
  }

  /** The version policy of a name (the first declared config of the name that states one). */
  policy(name: string): VersionPolicy {
    return policyOf(this.#repository.declaredOf(name), name);
  }

  /**
   * The configs of a name's served versions, by its version policy (not by the replica table:
   * a version the policy no longer serves keeps its entry while a worker still hosts it).
   */
  servedConfigs(name: string): ModelConfig[] {
    return servedModels(this.#repository.declaredOf(name));
  }

  /**
   * Reads a name's declared configs again: sets its split from the traffic shares its served
   * versions state (none: no split), and says which configs are served and which are not.
   */
  applyDeclared(name: string): { served: ModelConfig[]; unserved: ModelConfig[] } {
    const declared = this.#repository.declaredOf(name);
    const served = servedModels(declared);
    const versions = new Set(served.map((m) => m.version));
    const split = new Map<string, number>();
    for (const m of declared)
      if (m.traffic !== undefined && versions.has(m.version)) split.set(m.version, m.traffic);
    if (split.size > 0) this.#traffic.set(name, split);
    else this.#traffic.delete(name);
    return { served, unserved: declared.filter((m) => !versions.has(m.version)) };
  }

  /**
   * Finds the entry a request means: the given version, or the newest version when none is
   * given. MODEL_NOT_FOUND names what exists.
   */
  resolve(name: string, version?: string): ModelEntry {
    const versions = this.#replicas.versions(name);
    if (this.#repository.isUnloaded(name)) {
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" is unloaded; POST /v2/repository/models/${name}/load to serve it again`,
      );
    }
    if (versions.length === 0) {
      const known = this.#replicas.names().sort();
      throw new InfergridError(
        'MODEL_NOT_FOUND',
        `model "${name}" is not served here${known.length ? ` (models: ${known.join(', ')})` : ''}`,
      );
    }
    const chosen = version ?? versions[0]!;
    const entry = this.#replicas.get(name, chosen);
    if (!entry && this.#repository.isDeclared(name, chosen)) {
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
    if (!split || this.#repository.isUnloaded(name)) return this.resolve(name, version);
    let candidates = [...split].filter(([, w]) => w > 0);
    const ready = candidates.filter(([v]) => {
      const e = this.#replicas.get(name, v);
      return e !== undefined && this.#repository.isReady(e);
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

  /** The traffic split of a name (version -> share), empty when none is set. */
  traffic(name: string): Record<string, number> {
    return Object.fromEntries(this.#traffic.get(name) ?? []);
  }

  /**
   * Sets (or with an empty object, clears) a name's traffic split. Every version must be
   * served and the shares must add up to more than 0; a refused split leaves the old one.
   */
  setTraffic(name: string, split: Record<string, number>): void {
    const versions = this.#replicas.versions(name);
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
  }

  /** Drops a name's split (the name was forgotten). */
  clearTraffic(name: string): void {
    this.#traffic.delete(name);
  }
}
