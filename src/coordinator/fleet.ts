/**
 * The fleet as this coordinator sees it, assembled in one place: every connected worker with
 * its state, health, load and counters, and per hosted model version its replica state and the
 * router's view (circuit, latency, picks). `/admin/workers`, `/admin/overview` (the dashboard)
 * and the Prometheus fleet gauges are all views of this snapshot.
 */

import type { ModelState } from '../protocol/index.ts';
import { type ModelEntry, type ModelRegistry, modelKey } from '../registry/index.ts';
import type { Router, WorkerHealth } from '../routing/index.ts';
import type { WorkerPool } from './worker-pool.ts';

export interface FleetReplica {
  name: string;
  version: string;
  state: ModelState;
  circuit: string;
  consecutiveFailures: number;
  circuitOpens: number;
  /** The router's latency estimate for this replica, ms; null before any answer. */
  latencyMs: number | null;
  picks: number;
  lastPickedAtMs: number | undefined;
}

export interface FleetWorker {
  id: string;
  origin: 'inbound' | 'static';
  address: string | undefined;
  pid: number;
  pool: string | undefined;
  /** 'removing' while an operator drains it out of this coordinator. */
  state: 'ready' | 'draining' | 'removing';
  draining: boolean;
  health: WorkerHealth;
  consecutiveHealthFailures: number;
  lastRttMs: number | undefined;
  healthChecks: number;
  weight: number;
  inFlight: number;
  reportedInFlight: number;
  requests: number;
  failures: number;
  connectedAtMs: number;
  lastHeartbeatAtMs: number;
  models: FleetReplica[];
}

/** Every connected worker, each with the model versions it hosts. */
export function fleetSnapshot(registry: ModelRegistry, pool: WorkerPool, router: Router): FleetWorker[] {
  // the served versions (an unloaded name's replicas are on their way out)
  const entries: ModelEntry[] = [...registry.entries()];
  return pool.list().map((w) => ({
    id: w.id,
    origin: w.origin,
    address: w.address,
    pid: w.pid,
    pool: w.pool,
    state: w.removing ? 'removing' : w.state,
    draining: w.draining,
    health: w.health,
    consecutiveHealthFailures: w.healthCheck.consecutiveFailures,
    lastRttMs: w.healthCheck.lastRttMs,
    healthChecks: w.healthCheck.checks,
    weight: w.weight,
    inFlight: w.inFlight,
    reportedInFlight: w.reportedInFlight,
    requests: w.requests,
    failures: w.failures,
    connectedAtMs: w.connectedAt,
    lastHeartbeatAtMs: w.lastHeartbeatAt,
    models: entries
      .filter((e) => e.replicas.has(w.id))
      .map((e) => {
        const route = router.stats(modelKey(e.name, e.version), w.key);
        return {
          name: e.name,
          version: e.version,
          state: e.replicas.get(w.id)!.state,
          circuit: route?.circuit ?? 'closed',
          consecutiveFailures: route?.consecutiveFailures ?? 0,
          circuitOpens: route?.circuitOpens ?? 0,
          latencyMs: route?.latencyMs ?? null,
          picks: route?.picks ?? 0,
          lastPickedAtMs: route?.lastPickedAt,
        };
      }),
  }));
}
