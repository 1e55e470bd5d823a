/**
 * GET /admin/cluster: the cluster membership as this coordinator sees it (members by role with
 * their addresses and models, whether Redis answers, the membership's counters). Off (no
 * `cluster` section): `{"enabled": false}`. Reading needs the metrics or admin scope, as every
 * GET under /admin/ does (auth.ts).
 *
 * The source is structural (a `snapshot()`), so the API does not depend on the cluster module.
 */

import type { FastifyInstance } from 'fastify';

export interface ClusterStatusSource {
  /** A JSON-able view of the membership. */
  snapshot(): object;
}

export function registerClusterRoutes(app: FastifyInstance, cluster: ClusterStatusSource | undefined): void {
  app.get('/admin/cluster', async () => (cluster ? cluster.snapshot() : { enabled: false }));
}
