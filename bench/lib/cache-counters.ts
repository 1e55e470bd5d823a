/**
 * A coordinator's response-cache counters for one model, read from GET /admin/cache and the
 * model's statistics: what the cache and overhead scenarios check their hit runs against.
 */

/** The coordinator's counters over a timed run. */
export interface Counters {
  hits: number;
  misses: number;
  bypasses: number;
  /** Requests the worker ran (Triton's inference_count). */
  workerInferences: number;
  tierHits: Record<string, number>;
}

/** What GET /admin/cache answers, as far as the scenarios read it. */
export interface AdminCache {
  store: string;
  tiers: { name: string; entries: number; hits?: number }[];
  models: Record<string, { hits: number; misses: number; bypasses: number }>;
}

/** One model's cache counters on a coordinator and the inferences its workers ran. */
export async function counters(url: string, model = 'echo'): Promise<Counters> {
  const admin = (await (await fetch(`${url}/admin/cache`)).json()) as AdminCache;
  const stats = (await (await fetch(`${url}/v2/models/${model}/stats`)).json()) as {
    model_stats: { inference_count: number }[];
  };
  const counted = admin.models[model] ?? { hits: 0, misses: 0, bypasses: 0 };
  return {
    hits: counted.hits,
    misses: counted.misses,
    bypasses: counted.bypasses,
    workerInferences: stats.model_stats[0]?.inference_count ?? 0,
    // only a tiered store counts hits per tier
    tierHits: Object.fromEntries(
      admin.tiers.flatMap((t) => (t.hits === undefined ? [] : [[t.name, t.hits]])),
    ),
  };
}

/** What the counters moved by between two readings. */
export function delta(after: Counters, before: Counters): Counters {
  return {
    hits: after.hits - before.hits,
    misses: after.misses - before.misses,
    bypasses: after.bypasses - before.bypasses,
    workerInferences: after.workerInferences - before.workerInferences,
    tierHits: Object.fromEntries(
      Object.entries(after.tierHits).map(([k, v]) => [k, v - (before.tierHits[k] ?? 0)]),
    ),
  };
}
