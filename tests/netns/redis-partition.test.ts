/**
 * The Redis host cut off under load: two coordinators and three workers that found each other
 * through Redis (cluster.redis) keep serving on the fleet they last knew. Nothing in the request
 * path needs Redis, so no request may fail, no coordinator may drop a worker, while Redis is
 * unreachable for longer than a lease plus a reconcile period (by then every lease taken before
 * the cut has expired in Redis, and each coordinator has tried to re-read membership at least
 * once), nor after it is back. The coordinators do notice: /admin/cluster says Redis is down during
 * the cut and up after it, and lists the whole cluster again once it is back.
 *
 * Needs the discovery work; until it is on this branch the test skips and says so.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { labOrSkip } from '../fixtures/netns.ts';
import {
  INFER_BODY,
  INFER_PATH,
  REDIS_PORT,
  discoveryMissing,
  printFigure,
  serving,
  startFleet,
  waitForFleet,
  workersSeenBy,
} from '../fixtures/netns-fleet.ts';
import { waitFor } from '../fixtures/processes.ts';

const WORKERS = ['w1', 'w2', 'w3'];

/** What GET /admin/cluster says (the fields read here; docs/cluster.md). */
interface ClusterView {
  redis: { up: boolean };
  members: { id: string; role: string }[];
}
/** The cluster timings netns-fleet.ts configures (cluster.leaseMs, cluster.reconcileIntervalMs). */
const LEASE_MS = 1500;
const RECONCILE_INTERVAL_MS = 500;

test('netns redis partition - serving goes on over the last known fleet while Redis is cut off', {
  timeout: 120_000,
}, async (t) => {
  const missing = discoveryMissing();
  if (missing) {
    process.stderr.write(`SKIP ${t.name}: ${missing}\n`);
    t.skip(missing);
    return;
  }
  const lab = await labOrSkip(t, ['c1', 'c2', ...WORKERS, 'redis', 'client']);
  if (!lab) return;
  const fleet = await startFleet(t, lab, {
    coordinators: ['c1', 'c2'],
    workers: WORKERS,
    client: 'client',
    discovery: 'redis',
  });
  await waitForFleet(fleet, WORKERS);
  const { client, coordinators } = fleet;
  assert.equal((await client.probe(lab.address('redis'), REDIS_PORT)).connected, true);

  await client.startLoad({
    name: 'steady',
    targets: coordinators.map((c) => c.url),
    path: INFER_PATH,
    body: INFER_BODY,
    concurrency: 8,
    retry: false,
    requestTimeoutMs: 10_000,
  });
  await waitFor(
    '100 answers before the cut',
    async () => (await client.loadStats('steady')).succeeded >= 100,
  );

  const clusterAt = (c: (typeof coordinators)[0]) => client.json<ClusterView>(`${c.url}/admin/cluster`);
  const redisUpEverywhere = async (up: boolean) => {
    for (const c of coordinators) if ((await clusterAt(c)).redis.up !== up) return false;
    return true;
  };
  await waitFor('both coordinators to list the whole cluster', async () => {
    for (const c of coordinators) {
      const { members } = await clusterAt(c);
      if (members.filter((m) => m.role === 'coordinator').length !== 2) return false;
      if (!WORKERS.every((id) => members.some((m) => m.role === 'worker' && m.id === id))) return false;
    }
    return true;
  });

  await lab.partition('redis');
  const cutAt = Date.now();
  const atCut = (await client.loadStats('steady')).succeeded;
  const lost = new Set<string>();
  const watchFleet = async (): Promise<void> => {
    for (const c of coordinators) {
      const workers = await workersSeenBy(fleet, c);
      for (const id of WORKERS) if (!serving(workers, id)) lost.add(`${c.host} lost ${id}`);
    }
  };
  // The scenario is about a span of time: Redis stays cut off until every lease from before
  // the cut has run out twice over and 300 more requests were served, the fleet watched all along.
  const outageMs = 2 * (LEASE_MS + RECONCILE_INTERVAL_MS);
  await waitFor('both coordinators to see Redis down', () => redisUpEverywhere(false), 30_000);
  await waitFor(
    `${outageMs} ms of Redis outage and 300 answers during it`,
    async () => {
      await watchFleet();
      return Date.now() - cutAt >= outageMs && (await client.loadStats('steady')).succeeded >= atCut + 300;
    },
    60_000,
  );
  const servedDuringOutage = (await client.loadStats('steady')).succeeded - atCut;

  await lab.heal('redis');
  const healedAt = Date.now();
  const atHeal = (await client.loadStats('steady')).succeeded;
  await waitFor('both coordinators to see Redis again', () => redisUpEverywhere(true), 30_000);
  await waitFor(
    `${outageMs} ms after Redis is back and 300 answers`,
    async () => {
      await watchFleet();
      return (
        Date.now() - healedAt >= outageMs && (await client.loadStats('steady')).succeeded >= atHeal + 300
      );
    },
    60_000,
  );
  const stats = await client.stopLoad('steady');

  printFigure('requestsFailedDuringRedisPartition', stats.failed, { servedDuringOutage, outageMs });
  t.diagnostic(
    `sent ${stats.sent}, succeeded ${stats.succeeded}, ${servedDuringOutage} of them while Redis was cut off`,
  );
  assert.deepEqual(stats.failures, [], 'no request failed');
  assert.equal(stats.succeeded, stats.sent);
  assert.deepEqual([...lost], [], 'no coordinator dropped a worker');
  // once Redis is back every member has re-announced: the membership is whole again
  for (const c of coordinators) {
    const { members } = await clusterAt(c);
    assert.deepEqual(
      members
        .filter((m) => m.role === 'worker')
        .map((m) => m.id)
        .sort(),
      WORKERS,
      `${c.host}'s cluster view after the heal`,
    );
    assert.equal(members.filter((m) => m.role === 'coordinator').length, 2);
  }
});
