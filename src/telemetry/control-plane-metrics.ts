/**
 * The shared control plane's metrics (src/cluster/control-plane.ts), on the coordinator's
 * registry: records from other coordinators applied here by kind, writes waiting for Redis,
 * records skipped as malformed or oversized, and records refused or failed when applied. Read at scrape time from the plane's counts,
 * so the control plane itself does not depend on prom-client.
 */

import { Counter, Gauge, type Registry } from 'prom-client';

export interface ControlPlaneMetricsSource {
  /** Records applied here per kind (repository, traffic, removal). */
  applied: Readonly<Record<string, number>>;
  /** Changes made here not yet written to Redis. */
  pendingWrites: number;
  /** Records skipped: malformed, oversized, or beyond the cap. */
  skipped: number;
  /** Records the coordinator refused to apply (a config outside the repository roots) or failed to. */
  applyFailures: number;
}

export function registerControlPlaneMetrics(
  registry: Registry,
  source: () => ControlPlaneMetricsSource,
): void {
  const registers = [registry];
  new Counter({
    name: 'infergrid_cluster_control_applied_total',
    help: 'Control records (repository, traffic, removal) made on another coordinator and applied here',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      for (const [kind, n] of Object.entries(source().applied)) this.inc({ kind }, n);
    },
  });
  new Gauge({
    name: 'infergrid_cluster_control_pending_writes',
    help: 'Control changes made here and applied here, waiting for Redis to be published',
    registers,
    collect() {
      this.set(source().pendingWrites);
    },
  });
  new Counter({
    name: 'infergrid_cluster_control_skipped_total',
    help: 'Control records read from Redis and skipped: malformed, oversized, or beyond the record cap',
    registers,
    collect() {
      this.reset();
      this.inc(source().skipped);
    },
  });
  new Counter({
    name: 'infergrid_cluster_control_apply_failures_total',
    help: 'Control records this coordinator refused (e.g. a config naming a file outside the repository roots) or failed to apply; retried at each re-read',
    registers,
    collect() {
      this.reset();
      this.inc(source().applyFailures);
    },
  });
}
