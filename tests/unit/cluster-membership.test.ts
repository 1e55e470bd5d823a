/**
 * Cluster membership against a real Redis: the shared one at 127.0.0.1:6379 under a namespace of
 * each test's own, and, for outages and restarts, a redis-server of the test's own that it kills
 * and starts again (empty) on the same port. Waits are bounded conditions, never sleeps; what
 * is asserted is recorded facts (events, counters, keys).
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { type TestContext, test } from 'node:test';
import { Redis } from 'ioredis';
import { type Member, Membership, advertisedHost, followCoordinators } from '../../src/cluster/index.ts';
import { type ClusterConfig, clusterSchema } from '../../src/config/schema.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import type { HostPort } from '../../src/util/address.ts';
import { waitFor } from '../fixtures/processes.ts';
import { freePort, startRedisServer } from '../fixtures/redis-server.ts';

const SHARED_REDIS = 'redis://127.0.0.1:6379';

function clusterConfig(
  url: string,
  namespace: string,
  overrides: Partial<ClusterConfig> = {},
): ClusterConfig {
  return {
    ...clusterSchema.parse({
      redis: { url, namespace, connectTimeoutMs: 1000, commandTimeoutMs: 1000 },
    }),
    ...overrides,
  };
}

function member(id: string, role: Member['role'], extra: Partial<Member> = {}): Member {
  return { id, role, protocolVersion: 2, identity: 'cluster', startedAt: 1_700_000_000_000, ...extra };
}

/** A raw client on the shared Redis, and a fresh namespace whose keys are removed after the test. */
async function sharedRedis(t: TestContext): Promise<{ raw: Redis; ns: string }> {
  const raw = new Redis(SHARED_REDIS, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await raw.connect();
  const ns = `test-${randomUUID()}:`;
  t.after(async () => {
    await wipe(raw, ns);
    raw.disconnect();
  });
  return { raw, ns };
}

async function wipe(raw: Redis, ns: string): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await raw.scan(cursor, 'MATCH', `${ns}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length) removed += await raw.del(...keys);
  } while (cursor !== '0');
  return removed;
}

/** A Membership stopped after the test. */
function membership(t: TestContext, cluster: ClusterConfig, self?: Member): Membership {
  const m = new Membership({ cluster, logger: silentLogger(), ...(self ? { self } : {}) });
  t.after(() => m.stop());
  return m;
}

const ids = (m: Membership, role?: Member['role']) =>
  m
    .members(role)
    .map((x) => x.id)
    .sort();

test('cluster membership - a member announces under a lease it renews; a watcher sees it join by the channel', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  // the watcher's reconcile is an hour away: what it learns comes from the channel
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns, { reconcileIntervalMs: 3_600_000 }));
  const joined: Member[] = [];
  watcher.on('join', (m) => joined.push(m));
  await watcher.start();
  assert.deepEqual(ids(watcher), []);
  const self = member('c1', 'coordinator', { rpc: '127.0.0.1:9100', http: '127.0.0.1:8100' });
  const a = membership(
    t,
    clusterConfig(SHARED_REDIS, ns, { leaseMs: 600, reconcileIntervalMs: 3_600_000 }),
    self,
  );
  await a.start();
  assert.equal(a.redisUp, true);
  const key = `${ns}ig:v1:cluster:member:coordinator:c1`;
  assert.deepEqual(JSON.parse((await raw.get(key))!), self);
  const pttl = await raw.pttl(key);
  assert.ok(pttl > 0 && pttl <= 600, `lease ${pttl} ms`);
  await waitFor('the watcher to see c1', () => ids(watcher, 'coordinator').includes('c1'), 10_000);
  assert.deepEqual(joined, [self]);
  assert.equal(watcher.counters.reconciles, 1, 'only the first reconcile ran');
  // renewed every leaseMs/3: after 5 renewals (well past one lease) the key is still there
  await waitFor('five renewals', () => a.counters.renewals >= 5, 10_000);
  assert.ok((await raw.exists(key)) === 1, 'the renewed lease is alive');
  assert.equal(a.counters.announces, 1, 'a renewal of a live key is not re-announced');
});

test('cluster membership - a member that stops renewing expires and leaves at the next reconcile', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns, { reconcileIntervalMs: 100 }));
  const left: string[] = [];
  watcher.on('leave', (m) => left.push(m.id));
  await watcher.start();
  // a member that crashed: written once with a lease, never renewed
  await raw.set(`${ns}ig:v1:cluster:member:worker:w9`, JSON.stringify(member('w9', 'worker')), 'PX', 500);
  await waitFor('the watcher to see w9', () => ids(watcher).includes('w9'), 10_000);
  await waitFor('w9 to expire and leave', () => left.includes('w9'), 10_000);
  assert.deepEqual(ids(watcher), []);
  assert.equal(watcher.counters.leaves, 1);
});

test('cluster membership - stop deletes the lease and the watcher drops the member from the leave note', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns, { reconcileIntervalMs: 3_600_000 }));
  await watcher.start();
  const a = membership(t, clusterConfig(SHARED_REDIS, ns), member('w1', 'worker', { models: ['sim'] }));
  await a.start();
  await waitFor('w1 seen', () => ids(watcher).includes('w1'), 10_000);
  // a leave note for a member whose key is there is a lie: the member stays
  await raw.publish(
    `${ns}ig:v1:cluster:members`,
    JSON.stringify({ type: 'leave', role: 'worker', id: 'w1' }),
  );
  await waitFor('the lying note read', () => watcher.counters.notes >= 2, 10_000);
  await watcher.reconcileNow();
  assert.deepEqual(ids(watcher), ['w1']);
  await a.stop();
  assert.equal(await raw.exists(`${ns}ig:v1:cluster:member:worker:w1`), 0, 'the lease is deleted');
  await waitFor('w1 dropped', () => !ids(watcher).includes('w1'), 10_000);
  assert.equal(watcher.counters.reconciles, 2, 'dropped by the note, not by a reconcile');
  assert.equal(watcher.counters.leaves, 1);
});

test('cluster membership - malformed, oversized, mislabelled and disallowed records are ignored and counted', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  const p = `${ns}ig:v1:cluster:member:`;
  await raw.set(`${p}worker:good`, JSON.stringify(member('good', 'worker', { models: ['sim'] })));
  await raw.set(`${p}worker:notjson`, '{"id": "notjson", ');
  await raw.set(`${p}worker:extra`, JSON.stringify({ ...member('extra', 'worker'), evil: true }));
  await raw.set(
    `${p}worker:badmodels`,
    JSON.stringify(member('badmodels', 'worker', { models: [42 as unknown as string] })),
  );
  // the key says worker:liar, the record says it is coordinator c-real
  await raw.set(
    `${p}worker:liar`,
    JSON.stringify(member('c-real', 'coordinator', { rpc: '127.0.0.1:9000' })),
  );
  await raw.set(
    `${p}worker:huge`,
    JSON.stringify(member('huge', 'worker', { identity: 'x'.repeat(70_000) })),
  );
  await raw.set(
    `${p}coordinator:outside`,
    JSON.stringify(member('outside', 'coordinator', { rpc: '8.8.8.8:9000' })),
  );
  await raw.set(
    `${p}coordinator:portzero`,
    JSON.stringify(member('portzero', 'coordinator', { rpc: '127.0.0.1:0' })),
  );
  await raw.set(
    `${p}coordinator:badaddr`,
    JSON.stringify(member('badaddr', 'coordinator', { rpc: 'no-port-here' })),
  );
  await raw.set(
    `${p}coordinator:name`,
    JSON.stringify(member('name', 'coordinator', { rpc: 'evil.example.com:9000' })),
  );
  await raw.rpush(`${p}worker:alist`, 'x');
  await raw.set(`${p}bogusrole:x`, JSON.stringify(member('x', 'worker')));
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns));
  const joined: string[] = [];
  watcher.on('join', (m) => joined.push(m.id));
  await watcher.start();
  assert.deepEqual(joined, ['good']);
  assert.deepEqual(ids(watcher), ['good']);
  const { ignored } = watcher.counters;
  assert.equal(ignored.oversized, 1);
  assert.equal(ignored.disallowed, 3, 'outside the allow list: 8.8.8.8, port 0, an unlisted name');
  // notjson, extra, badmodels, liar, badaddr, alist (WRONGTYPE), bogusrole
  assert.equal(ignored.malformed, 7);
  // a malformed note, and a flood-size one: ignored, nothing read for them
  await raw.publish(`${ns}ig:v1:cluster:members`, 'not json');
  await raw.publish(
    `${ns}ig:v1:cluster:members`,
    JSON.stringify({ type: 'announce', role: 'worker', id: 'x'.repeat(2000) }),
  );
  await waitFor('two bad notes ignored', () => watcher.counters.ignored.notes === 2, 10_000);
  // a good record that turns bad leaves
  await raw.set(`${p}worker:good`, JSON.stringify(member('good', 'worker', { rpc: '8.8.8.8:1' })));
  await raw.publish(
    `${ns}ig:v1:cluster:members`,
    JSON.stringify({ type: 'announce', role: 'worker', id: 'good' }),
  );
  await waitFor('the corrupted member dropped', () => ids(watcher).length === 0, 10_000);
});

test('cluster membership - at most maxMembers members are taken, with the excess counted', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  for (let i = 0; i < 12; i++)
    await raw.set(`${ns}ig:v1:cluster:member:worker:w${i}`, JSON.stringify(member(`w${i}`, 'worker')));
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns, { maxMembers: 5 }));
  await watcher.start();
  assert.equal(watcher.members('worker').length, 5);
  assert.ok(watcher.counters.truncated >= 1);
  // announced ones beyond the cap are not taken either
  await raw.set(`${ns}ig:v1:cluster:member:worker:late`, JSON.stringify(member('late', 'worker')));
  await raw.publish(
    `${ns}ig:v1:cluster:members`,
    JSON.stringify({ type: 'announce', role: 'worker', id: 'late' }),
  );
  await waitFor('the note read', () => watcher.counters.notes >= 1, 10_000);
  await watcher.reconcileNow();
  assert.equal(watcher.members('worker').length, 5);
});

test('cluster membership - a renewal that finds its key wiped re-announces, and the watcher takes it back', async (t) => {
  const { raw, ns } = await sharedRedis(t);
  const watcher = membership(t, clusterConfig(SHARED_REDIS, ns, { reconcileIntervalMs: 3_600_000 }));
  await watcher.start();
  const a = membership(t, clusterConfig(SHARED_REDIS, ns, { leaseMs: 900 }), member('w1', 'worker'));
  await a.start();
  await waitFor('w1 seen', () => ids(watcher).includes('w1'), 10_000);
  const before = a.counters.announces;
  assert.equal(await wipe(raw, ns), 1);
  await waitFor(
    'w1 re-announced',
    async () => (await raw.exists(`${ns}ig:v1:cluster:member:worker:w1`)) === 1,
    10_000,
  );
  await waitFor('the announce counted', () => a.counters.announces === before + 1, 10_000);
  // the watcher re-read it on the note (its reconcile is an hour away)
  await watcher.reconcileNow();
  assert.deepEqual(ids(watcher), ['w1']);
  assert.equal(watcher.counters.leaves, 0);
});

test('cluster membership - Redis down keeps the last known members; a restarted empty Redis gets everyone back at once', async (t) => {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let redis = await startRedisServer(t, port);
  const ns = `test-${randomUUID()}:`;
  // leases of a minute: anything re-appearing within the waits below was re-announced, not renewed
  const slow = { leaseMs: 60_000, reconcileIntervalMs: 100 };
  const watcher = membership(
    t,
    clusterConfig(url, ns, slow),
    member('c1', 'coordinator', { rpc: '127.0.0.1:9001' }),
  );
  const w1 = membership(t, clusterConfig(url, ns, slow), member('w1', 'worker'));
  const w2 = membership(t, clusterConfig(url, ns, slow), member('w2', 'worker'));
  await Promise.all([watcher.start(), w1.start(), w2.start()]);
  await waitFor('both workers seen', () => ids(watcher, 'worker').join() === 'w1,w2', 10_000);
  const downEvents: boolean[] = [];
  watcher.on('redis', (up) => downEvents.push(up));

  await redis.kill();
  await waitFor('Redis seen down', () => !watcher.redisUp, 10_000);
  const failures = watcher.counters.redisFailures;
  // w2 goes away while nobody can tell
  await w2.stop();
  await waitFor('reconciles failing', () => watcher.counters.redisFailures >= failures + 3, 20_000);
  assert.deepEqual(ids(watcher, 'worker'), ['w1', 'w2'], 'nothing is dropped while Redis is down');
  assert.equal(watcher.counters.leaves, 0);

  // Redis restarts empty on the same port
  redis = await startRedisServer(t, port);
  const raw = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await raw.connect();
  t.after(() => raw.disconnect());
  await waitFor(
    'the live members re-announced at once (not a renewal: those are 20 s apart)',
    async () =>
      (await raw.exists(
        `${ns}ig:v1:cluster:member:worker:w1`,
        `${ns}ig:v1:cluster:member:coordinator:c1`,
      )) === 2,
    10_000,
  );
  await waitFor('Redis seen up', () => watcher.redisUp, 10_000);
  // w2 never came back: once the grace lease passes it would be dropped; w1 must stay throughout
  await watcher.reconcileNow();
  assert.ok(ids(watcher, 'worker').includes('w1'));
  assert.deepEqual(downEvents, [false, true]);
});

test('cluster membership - an unreachable Redis at start: start resolves, nothing throws, it keeps trying', async (t) => {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const ns = `test-${randomUUID()}:`;
  const m = membership(
    t,
    clusterConfig(url, ns, { leaseMs: 300, reconcileIntervalMs: 100 }),
    member('w1', 'worker'),
  );
  await m.start();
  assert.equal(m.redisUp, false);
  assert.deepEqual(ids(m), ['w1'], 'only itself');
  const failures = m.counters.redisFailures;
  await waitFor('retries failing', () => m.counters.redisFailures >= failures + 3, 10_000);
  // Redis comes up: the member announces itself without being told
  await startRedisServer(t, port);
  const raw = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await raw.connect();
  t.after(() => raw.disconnect());
  await waitFor(
    'announced',
    async () => (await raw.exists(`${ns}ig:v1:cluster:member:worker:w1`)) === 1,
    15_000,
  );
  await waitFor('Redis seen up', () => m.redisUp, 10_000);
});

test('cluster membership - a worker follows coordinators: dials who joins, stops dialing who leaves, keeps static ones', async (t) => {
  const { ns } = await sharedRedis(t);
  const cluster = clusterConfig(SHARED_REDIS, ns, { reconcileIntervalMs: 100 });
  const watcher = membership(t, cluster, member('w1', 'worker'));
  const dialing = new Set<string>(['127.0.0.1:9500']);
  const dialer = {
    dialCoordinator(a: HostPort) {
      const label = `${a.host}:${a.port}`;
      if (dialing.has(label)) return false;
      dialing.add(label);
      return true;
    },
    async stopDialingCoordinator(a: HostPort) {
      dialing.delete(`${a.host}:${a.port}`);
    },
  };
  await watcher.start();
  const unfollow = followCoordinators(watcher, dialer, silentLogger());
  t.after(unfollow);
  const c1 = membership(t, cluster, member('c1', 'coordinator', { rpc: '127.0.0.1:9501' }));
  const cStatic = membership(t, cluster, member('c-static', 'coordinator', { rpc: '127.0.0.1:9500' }));
  await Promise.all([c1.start(), cStatic.start()]);
  await waitFor('c1 dialed', () => dialing.has('127.0.0.1:9501'), 10_000);
  await waitFor('both known', () => ids(watcher, 'coordinator').length === 2, 10_000);
  await Promise.all([c1.stop(), cStatic.stop()]);
  await waitFor('c1 no longer dialed', () => !dialing.has('127.0.0.1:9501'), 10_000);
  await waitFor('both gone', () => ids(watcher, 'coordinator').length === 0, 10_000);
  assert.deepEqual([...dialing], ['127.0.0.1:9500'], 'the static address is still dialed');
});

test('cluster membership - a wildcard listen host needs an advertised host', () => {
  assert.throws(
    () => advertisedHost('0.0.0.0', undefined, 'coordinator RPC'),
    /CONFIG_INVALID|advertiseHost/,
  );
  assert.throws(() => advertisedHost('::', undefined, 'coordinator RPC'), /advertise-host/);
  assert.equal(advertisedHost('0.0.0.0', '10.0.0.5', 'x'), '10.0.0.5');
  assert.equal(advertisedHost('127.0.0.1', undefined, 'x'), '127.0.0.1');
});
