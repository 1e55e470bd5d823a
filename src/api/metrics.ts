/**
 * `GET /metrics`: Prometheus text exposition of the coordinator's own metrics and every
 * connected worker's (fetched over its RPC connection, each series labelled with `worker`), so
 * one scrape sees the fleet. A worker that does not answer in time is left out of this scrape
 * and `infergrid_worker_metrics_up{worker}` says 0.
 */

import type { FastifyInstance } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import { PROMETHEUS_CONTENT_TYPE, mergeExposition } from '../telemetry/index.ts';

/** How long to wait for each worker's metrics, ms. */
const WORKER_METRICS_TIMEOUT_MS = 2000;

export function registerMetricsRoutes(app: FastifyInstance, coordinator: Coordinator): void {
  const { metrics, pool } = coordinator;
  app.get('/metrics', async (_req, reply) => {
    const workers = pool.list();
    const fetched = await Promise.all(
      workers.map((w) =>
        w.metrics(WORKER_METRICS_TIMEOUT_MS).then(
          (m) => ({ id: w.id, metrics: m }),
          () => ({ id: w.id, metrics: undefined }),
        ),
      ),
    );
    metrics.scraped.clear();
    for (const f of fetched) metrics.scraped.set(f.id, f.metrics !== undefined);
    const own = await metrics.registry.getMetricsAsJSON();
    const text = await mergeExposition([
      { metrics: own },
      ...fetched.flatMap((f) =>
        f.metrics ? [{ metrics: f.metrics as typeof own, labels: { worker: f.id } }] : [],
      ),
    ]);
    return reply.type(PROMETHEUS_CONTENT_TYPE).send(text);
  });
}
