/**
 * The operator's live view:
 *   GET /admin/overview   one JSON snapshot for dashboards: the server's request totals and rate,
 *                         every worker (state, health, load, models), per model name its
 *                         requests, errors, rate, p50/p99 latency, batch size, queue depth and
 *                         cache hit rate; with a server timestamp so clients can diff counters
 *   GET /dashboard/       a static page (no build, no CDN) that polls the overview once a second
 *   GET /                 redirects to the dashboard
 *
 * Trade-off: a snapshot asks every worker for its statistics (as /v2/models/stats does), so it
 * costs one small RPC per worker; a worker that does not answer within a second is listed in
 * `unreachableWorkers` rather than holding the page up. "Recent" batch size and hit rate are
 * diffs against what earlier snapshots saw up to `RECENT_WINDOW_MS` ago, kept here by time (not
 * per client), so several dashboards polling at once do not disturb each other.
 */

import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ModelStatsSnapshot } from '../batching/index.ts';
import { TieredStore } from '../cache/index.ts';
import { runsOnCoordinator } from '../config/index.ts';
import type { Coordinator } from '../coordinator/index.ts';
import { type ModelEntry, modelKey } from '../registry/index.ts';
import { RATE_WINDOW_S, type RequestCounts } from './request-counts.ts';

/** How long a snapshot waits for each worker's statistics, ms. */
const OVERVIEW_STATS_TIMEOUT_MS = 1000;
/** How far back "recent" batch size and cache hit rate look, ms. */
export const RECENT_WINDOW_MS = 10_000;
/** Snapshots closer together than this are not kept as a baseline, ms. */
const MIN_SAMPLE_GAP_MS = 500;

const DASHBOARD_FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

export interface OverviewOptions {
  coordinator: Coordinator;
  requestCounts: RequestCounts;
  serverName: string;
  serverVersion: string;
}

interface Percentiles {
  p50: number;
  p99: number;
}

/** Counters whose recent change is reported, per model name. */
interface Sample {
  atMs: number;
  inferences: number;
  executions: number;
  cacheHits: number;
  cacheLookups: number;
}

/** Earlier samples per model name, oldest first, spanning at most RECENT_WINDOW_MS. */
class SampleHistory {
  readonly #samples = new Map<string, Sample[]>();

  /** Records `current` (if far enough from the last) and returns the oldest sample in the window. */
  baseline(name: string, current: Sample): Sample | undefined {
    let list = this.#samples.get(name);
    if (!list) {
      list = [];
      this.#samples.set(name, list);
    }
    while (list.length > 0 && list[0]!.atMs < current.atMs - RECENT_WINDOW_MS) list.shift();
    const base = list[0];
    const last = list[list.length - 1];
    if (!last || current.atMs - last.atMs >= MIN_SAMPLE_GAP_MS) list.push(current);
    return base;
  }

  forgetExcept(names: ReadonlySet<string>): void {
    for (const name of this.#samples.keys()) if (!names.has(name)) this.#samples.delete(name);
  }
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);
const round = (x: number | null, digits = 2): number | null =>
  x === null ? null : Math.round(x * 10 ** digits) / 10 ** digits;
const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * A version's recent successful latencies, ms: a model's from the router (its attempts on the
 * workers); a pipeline's the coordinator runs from the coordinator, end to end (it is never routed).
 */
function latencyOf(coordinator: Coordinator, entry: ModelEntry): Percentiles | null {
  const at = (p: number): number | undefined =>
    runsOnCoordinator(entry.config)
      ? coordinator.stats.latencyPercentile(entry.name, entry.version, p)
      : coordinator.router.latencyPercentile(modelKey(entry.name, entry.version), p);
  const p50 = at(50);
  const p99 = at(99);
  return p50 === undefined || p99 === undefined ? null : { p50: round(p50)!, p99: round(p99)! };
}

/** Every connected worker's statistics, by worker id; workers that did not answer are listed apart. */
async function fetchWorkerStats(coordinator: Coordinator) {
  const unreachable: string[] = [];
  const byWorker = new Map<string, ModelStatsSnapshot[]>();
  await Promise.all(
    coordinator.pool.list().map(async (w) => {
      try {
        byWorker.set(w.id, await w.stats(OVERVIEW_STATS_TIMEOUT_MS));
      } catch {
        // shown to the operator as unreachable; the worker's own health checks deal with it
        unreachable.push(w.id);
      }
    }),
  );
  return { byWorker, unreachable: unreachable.sort() };
}

export function createOverview(options: OverviewOptions): () => Promise<object> {
  const { coordinator, requestCounts } = options;
  const { registry, router, dispatcher } = coordinator;
  const history = new SampleHistory();

  return async () => {
    const stats = await fetchWorkerStats(coordinator);
    const nowMs = Date.now();
    const entries = [...registry.entries()];
    const names = [...new Set(entries.map((e) => e.name))].sort();
    const cache = coordinator.cache;
    const cacheStats = cache?.stats() ?? {};

    const workerStats = [...stats.byWorker.values()].flat();
    const models = names.map((name) => {
      const versions = entries.filter((e) => e.name === name);
      // the workers' figures, and the coordinator's (a pipeline runs there)
      const own = [
        ...workerStats.filter((s) => s.name === name),
        ...versions.flatMap((e) => coordinator.stats.snapshot(e.name, e.version) ?? []),
      ];
      const inferences = own.reduce((n, s) => n + s.inferenceCount, 0);
      const executions = own.reduce((n, s) => n + s.executionCount, 0);
      const c = cacheStats[name];
      const cacheLookups = c ? c.hits + c.misses + c.joins : 0;
      const current: Sample = {
        atMs: nowMs,
        inferences,
        executions,
        cacheHits: c?.hits ?? 0,
        cacheLookups,
      };
      const base = history.baseline(name, current);
      // a worker that restarted counts from zero again: no recent figure rather than a negative one
      const recent = (a: number, b: number): number | null => (a >= 0 && b > 0 ? a / b : null);
      const latencies = versions.map((e) => latencyOf(coordinator, e));
      const known = latencies.filter((l): l is Percentiles => l !== null);
      const caches = versions.some((e) => e.config?.cache.enabled);
      return {
        name,
        ready: versions.some((e) => registry.isReady(e)),
        versions: versions.map((e, i) => ({
          version: e.version,
          ready: registry.isReady(e),
          replicas: e.replicas.size,
          readyReplicas: [...e.replicas.values()].filter((r) => r.state === 'ready').length,
          latencyMs: latencies[i] ?? null,
        })),
        ...requestCounts.model(name),
        // with several versions, the slowest version's figures
        latencyMs:
          known.length === 0
            ? null
            : { p50: Math.max(...known.map((l) => l.p50)), p99: Math.max(...known.map((l) => l.p99)) },
        inferenceCount: inferences,
        executionCount: executions,
        meanBatchSize: round(ratio(inferences, executions)),
        recentMeanBatchSize: base
          ? round(recent(inferences - base.inferences, executions - base.executions))
          : null,
        queueDepth: own.reduce((n, s) => n + s.queueDepth, 0),
        cache:
          caches && c
            ? {
                hits: c.hits,
                misses: c.misses,
                joins: c.joins,
                hitRate: round(ratio(c.hits, cacheLookups), 4),
                recentHitRate: base
                  ? round(recent(c.hits - base.cacheHits, cacheLookups - base.cacheLookups), 4)
                  : null,
              }
            : null,
      };
    });
    history.forgetExcept(new Set(names));

    const workers = coordinator.fleet().map((w) => {
      const own = stats.byWorker.get(w.id);
      return {
        id: w.id,
        pool: w.pool ?? null,
        pid: w.pid,
        origin: w.origin,
        address: w.address ?? null,
        state: w.state,
        draining: w.draining,
        health: w.health,
        lastRttMs: w.lastRttMs ?? null,
        inFlight: w.inFlight,
        reportedInFlight: w.reportedInFlight,
        requests: w.requests,
        failures: w.failures,
        weight: w.weight,
        connectedAt: iso(w.connectedAtMs),
        queueDepth: own ? own.reduce((n, s) => n + s.queueDepth, 0) : null,
        modelsReady: w.models.filter((m) => m.state === 'ready').length,
        models: w.models.map((m) => ({ name: m.name, version: m.version, state: m.state })),
      };
    });

    const total = requestCounts.total();
    let cacheSummary: object | null = null;
    if (cache) {
      const all = Object.values(cacheStats);
      const hits = all.reduce((n, s) => n + s.hits, 0);
      const misses = all.reduce((n, s) => n + s.misses, 0);
      const joins = all.reduce((n, s) => n + s.joins, 0);
      const { store } = cache;
      cacheSummary = {
        store: store.name,
        tiers: store instanceof TieredStore ? store.tiers.map((t) => t.name) : [store.name],
        inFlight: cache.inFlight,
        hits,
        misses,
        joins,
        hitRate: round(ratio(hits, hits + misses + joins), 4),
      };
    }

    return {
      timestamp: iso(nowMs),
      timestampMs: nowMs,
      server: {
        name: options.serverName,
        version: options.serverVersion,
        pid: process.pid,
        startedAt: iso(requestCounts.startedAtMs),
        uptimeMs: nowMs - requestCounts.startedAtMs,
        ready: registry.allReady(),
        ...total,
        rateWindowS: RATE_WINDOW_S,
        inFlight: workers.reduce((n, w) => n + w.inFlight, 0),
      },
      routing: {
        retries: dispatcher.retries,
        hedges: dispatcher.hedges,
        panicPicks: router.panicPicks,
      },
      cache: cacheSummary,
      workers,
      models,
      unreachableWorkers: stats.unreachable,
    };
  };
}

export function registerOverviewRoutes(app: FastifyInstance, options: OverviewOptions): void {
  const overview = createOverview(options);
  app.get('/admin/overview', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return overview();
  });

  // read once at start: the page is a handful of small files that change only with a release
  const folder = new URL('./dashboard/', import.meta.url);
  const files = new Map(
    Object.entries(DASHBOARD_FILES).map(([file, type]) => [
      file,
      { type, body: readFileSync(new URL(file, folder), 'utf8') },
    ]),
  );
  const sendFile = (file: string) => async (_req: unknown, reply: FastifyReply) => {
    const f = files.get(file)!;
    // security headers (CSP, frame-ancestors 'none', nosniff) from @fastify/helmet, registered by the front guard
    await reply.helmet();
    return reply.type(f.type).header('cache-control', 'no-cache').send(f.body);
  };
  // the page links its files relatively, so it also works behind a path-prefixing proxy
  app.get('/', async (_req, reply) => reply.redirect('/dashboard/'));
  app.get('/dashboard', async (_req, reply) => reply.redirect('/dashboard/'));
  app.get('/dashboard/', sendFile('index.html'));
  for (const file of files.keys()) if (file !== 'index.html') app.get(`/dashboard/${file}`, sendFile(file));
}
