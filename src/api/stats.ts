/**
 * Triton's statistics extension: `GET /v2/models/stats` and `GET /v2/models/{m}[/versions/{v}]/stats`.
 * The coordinator asks every worker hosting the model for its own figures and sums them with
 * its own (response cache hits and misses; a pipeline's runs, which happen on the coordinator),
 * so one request sees the fleet; the per-worker figures and what Triton has no field for (queue
 * depth, rejections) are under `infergrid`. docs/metrics.md says what each field counts.
 */

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type ModelStatsSnapshot, mergeStats } from '../batching/index.ts';
import type { Coordinator } from '../coordinator/index.ts';
import { type ModelEntry, modelKey } from '../registry/index.ts';

/** How long to wait for each worker's figures, ms. */
const STATS_TIMEOUT_MS = 2000;

function tritonShape(merged: ModelStatsSnapshot, perWorker: { id: string; s: ModelStatsSnapshot }[]) {
  return {
    name: merged.name,
    version: merged.version,
    last_inference: merged.lastInferenceMs,
    inference_count: merged.inferenceCount,
    execution_count: merged.executionCount,
    inference_stats: {
      success: merged.success,
      fail: merged.fail,
      queue: merged.queue,
      compute_input: merged.computeInput,
      compute_infer: merged.computeInfer,
      compute_output: merged.computeOutput,
      cache_hit: merged.cacheHit,
      cache_miss: merged.cacheMiss,
    },
    batch_stats: merged.batchStats.map((b) => ({
      batch_size: b.batchSize,
      compute_input: b.computeInput,
      compute_infer: b.computeInfer,
      compute_output: b.computeOutput,
    })),
    infergrid: {
      queue_depth: merged.queueDepth,
      max_queue_depth: merged.maxQueueDepth,
      queue_max_ns: merged.queueMaxNs,
      rejected: merged.rejected,
      workers: perWorker.map(({ id, s }) => ({
        id,
        inference_count: s.inferenceCount,
        execution_count: s.executionCount,
        queue_depth: s.queueDepth,
        rejected: s.rejected,
        ...(s.streams ? { streams: s.streams } : {}),
      })),
    },
  };
}

async function collect(coordinator: Coordinator, entries: ModelEntry[]) {
  const wanted = new Set(entries.map((e) => modelKey(e.name, e.version)));
  const workerIds = new Set(entries.flatMap((e) => [...e.replicas.keys()]));
  const unreachable: string[] = [];
  const fetched = await Promise.all(
    [...workerIds].map(async (id) => {
      const handle = coordinator.pool.get(id);
      try {
        return handle ? { id, models: await handle.stats(STATS_TIMEOUT_MS) } : undefined;
      } catch {
        unreachable.push(id);
        return undefined;
      }
    }),
  );
  const byModel = new Map<string, { id: string; s: ModelStatsSnapshot }[]>();
  for (const worker of fetched) {
    if (!worker) continue;
    for (const s of worker.models) {
      const key = modelKey(s.name, s.version);
      if (!wanted.has(key)) continue;
      byModel.set(key, [...(byModel.get(key) ?? []), { id: worker.id, s }]);
    }
  }
  const modelStats = entries.flatMap((e) => {
    const perWorker = byModel.get(modelKey(e.name, e.version)) ?? [];
    // the coordinator's own record last: the workers' carry what only they have (streams, llm)
    const own = coordinator.stats.of(e.name, e.version).snapshot();
    const merged = mergeStats([...perWorker.map((p) => p.s), own]);
    return merged ? [tritonShape(merged, perWorker)] : [];
  });
  return { model_stats: modelStats, ...(unreachable.length ? { unreachable_workers: unreachable } : {}) };
}

/**
 * Triton's statistics object (`{model_stats: [...]}`) for every model, one model (every
 * version of it, as Triton does) or one version. Shared by the HTTP route and gRPC's
 * ModelStatistics; an unknown model or version throws MODEL_NOT_FOUND.
 */
export async function modelStatistics(coordinator: Coordinator, model?: string, version?: string) {
  if (model === undefined) return collect(coordinator, [...coordinator.registry.entries()]);
  const entry = coordinator.resolve(model, version);
  const entries = version ? [entry] : [...coordinator.registry.entries()].filter((e) => e.name === model);
  return collect(coordinator, entries);
}

export function registerStatsRoutes(app: FastifyInstance, coordinator: Coordinator): void {
  app.get('/v2/models/stats', async () => modelStatistics(coordinator));
  const one = async (req: FastifyRequest<{ Params: { model: string; version?: string } }>) =>
    modelStatistics(coordinator, req.params.model, req.params.version);
  app.get('/v2/models/:model/stats', one);
  app.get('/v2/models/:model/versions/:version/stats', one);
}
