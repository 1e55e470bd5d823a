/**
 * The statistics only the coordinator sees, per model version, in the workers' record shape so
 * the statistics API sums them with the workers' (src/api/stats.ts): response cache hits and
 * misses (a hit never reaches a worker), and pipelines, which run here (Triton's ensembles:
 * end to end, their steps' queue and compute summed), with a window of a pipeline's recent
 * latencies for the dashboard's percentiles (a model's come from the router's attempts).
 *
 * Records are keyed by name and version, not by the registry's entry, so a reload of the same
 * version continues its record. Trade-off: records of versions no longer served are kept (a
 * version loaded again continues) up to MAX_RETIRED_RECORDS, the oldest forgotten first.
 */

import { ModelStats, type ModelStatsSnapshot } from '../batching/index.ts';
import { modelKey } from '../registry/index.ts';
import { LatencyWindow } from '../routing/index.ts';

/** Records kept for versions the registry no longer serves. */
export const MAX_RETIRED_RECORDS = 256;

interface VersionRecord {
  readonly stats: ModelStats;
  /** A pipeline's recent successful end-to-end latencies, ms; made on its first success. */
  latency: LatencyWindow | undefined;
}

export class CoordinatorStats {
  readonly #records = new Map<string, VersionRecord>();
  /** The record per registry entry object, so the request path builds no key string. */
  readonly #byEntry = new WeakMap<object, ModelStats>();
  /** Records dropped by the bound (an entry that still points to one finds the current record). */
  readonly #forgotten = new WeakSet<ModelStats>();
  readonly #served: (name: string, version: string) => boolean;

  /** `served`: whether the registry serves a version now (the others' records are bounded). */
  constructor(served: (name: string, version: string) => boolean) {
    this.#served = served;
  }

  /** The record of a version, made on first use. */
  of(name: string, version: string): ModelStats {
    return this.#record(name, version).stats;
  }

  /**
   * The record of a registry entry's version (the same record as `of` gives: a reload makes a
   * new entry object for the same version, which finds the record by name and version once).
   */
  forEntry(entry: { readonly name: string; readonly version: string }): ModelStats {
    let stats = this.#byEntry.get(entry);
    if (!stats || this.#forgotten.has(stats)) {
      stats = this.of(entry.name, entry.version);
      this.#byEntry.set(entry, stats);
    }
    return stats;
  }

  #record(name: string, version: string): VersionRecord {
    const key = modelKey(name, version);
    let r = this.#records.get(key);
    if (!r) {
      r = { stats: new ModelStats(name, version), latency: undefined };
      this.#records.set(key, r);
      this.#forgetRetired();
    }
    return r;
  }

  /** A pipeline request succeeded in `ms`, end to end. */
  observePipelineLatency(name: string, version: string, ms: number): void {
    const r = this.#record(name, version);
    r.latency ??= new LatencyWindow();
    r.latency.observe(ms);
  }

  /** The p-th percentile of a pipeline's recent successful latencies; undefined before any. */
  latencyPercentile(name: string, version: string, p: number): number | undefined {
    return this.#records.get(modelKey(name, version))?.latency?.percentile(p);
  }

  /** A version's figures; undefined when the coordinator has none for it. */
  snapshot(name: string, version: string): ModelStatsSnapshot | undefined {
    return this.#records.get(modelKey(name, version))?.stats.snapshot();
  }

  #forgetRetired(): void {
    let retired = 0;
    for (const r of this.#records.values()) if (!this.#served(r.stats.name, r.stats.version)) retired++;
    if (retired <= MAX_RETIRED_RECORDS) return;
    for (const [key, r] of this.#records) {
      if (retired <= MAX_RETIRED_RECORDS) return;
      if (this.#served(r.stats.name, r.stats.version)) continue;
      this.#records.delete(key);
      this.#forgotten.add(r.stats);
      retired--;
    }
  }
}
