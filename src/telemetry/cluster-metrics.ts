/**
 * Gauges of the cluster membership (src/cluster), read at scrape time: members known per role
 * (this process included) and whether the cluster's Redis answered the last operation. A
 * structural source, so telemetry does not depend on the cluster module.
 */

import { Gauge, type Registry } from 'prom-client';

export interface ClusterMetricsSource {
  counts(): readonly { role: string; count: number }[];
  readonly redisUp: boolean;
}

/** Adds infergrid_cluster_members{role} and infergrid_cluster_redis_up to `registry`. */
export function registerClusterMetrics(registry: Registry, source: ClusterMetricsSource): void {
  new Gauge({
    name: 'infergrid_cluster_members',
    help: 'Cluster members this process knows of through Redis, by role (itself included)',
    labelNames: ['role'],
    registers: [registry],
    collect() {
      this.reset();
      for (const { role, count } of source.counts()) this.set({ role }, count);
    },
  });
  new Gauge({
    name: 'infergrid_cluster_redis_up',
    help: '1 when the cluster Redis answered the last membership operation (0: serving on the last known members)',
    registers: [registry],
    collect() {
      this.set(source.redisUp ? 1 : 0);
    },
  });
}
