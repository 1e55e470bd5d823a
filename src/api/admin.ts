import type { FastifyInstance } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';

/** Operator routes. `GET /admin/workers`: every connected worker, its state, load and models. */
export function registerAdminRoutes(app: FastifyInstance, coordinator: Coordinator): void {
  app.get('/admin/workers', async () => {
    const models = [...coordinator.registry.entries()];
    return {
      workers: coordinator.pool.list().map((w) => ({
        id: w.id,
        origin: w.origin,
        address: w.address ?? null,
        pid: w.pid,
        state: w.state,
        inFlight: w.inFlight,
        reportedInFlight: w.reportedInFlight,
        requests: w.requests,
        failures: w.failures,
        connectedAt: new Date(w.connectedAt).toISOString(),
        lastHeartbeatAt: new Date(w.lastHeartbeatAt).toISOString(),
        models: models
          .filter((e) => e.replicas.has(w.id))
          .map((e) => ({ name: e.name, version: e.version, state: e.replicas.get(w.id)!.state })),
      })),
    };
  });
}
