/**
 * Discovery through Redis with real processes: coordinators and workers given only the cluster's
 * Redis (no address at all) find each other, serve requests, pick up a coordinator started later
 * and let go of one that stopped. The shared Redis at 127.0.0.1:6379, under a namespace of the
 * test's own (removed after it).
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { type TestContext, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  type RunningCoordinator,
  adminWorkers,
  spawnInfergrid,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';

function configYaml(ns: string, withUrl: boolean): string {
  return `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 300 }
cluster:
  redis: { ${withUrl ? `url: "${REDIS_URL}", ` : ''}namespace: "${ns}" }
  leaseMs: 3000
  reconcileIntervalMs: 300
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;
}

const x = [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], data: [5, 6] }];

interface ClusterView {
  enabled: boolean;
  redis: { up: boolean; url: string };
  members: { id: string; role: string; rpc?: string; models?: string[]; self: boolean }[];
}

async function cluster(url: string): Promise<ClusterView> {
  const res = await fetch(`${url}/admin/cluster`);
  assert.equal(res.status, 200);
  return (await res.json()) as ClusterView;
}

const rpcOf = (c: RunningCoordinator) => c.rpcAddress;

async function namespace(t: TestContext): Promise<string> {
  const ns = `test-${randomUUID()}:`;
  t.after(async () => {
    const raw = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await raw.connect();
    let cursor = '0';
    do {
      const [next, keys] = await raw.scan(cursor, 'MATCH', `${ns}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length) await raw.del(...keys);
    } while (cursor !== '0');
    raw.disconnect();
  });
  return ns;
}

test('cluster - coordinators and workers given only Redis find each other, take a late coordinator and drop a stopped one', {
  timeout: 180_000,
}, async (t) => {
  const ns = await namespace(t);
  const full = writeConfig(t, configYaml(ns, true));
  // this one gets its URL from --cluster-redis
  const noUrl = writeConfig(t, configYaml(ns, false));
  const workerEnv = { INFERGRID_LOG_LEVEL: 'info' };
  const [c1, c2] = await Promise.all([
    startCoordinator(t, full),
    startCoordinator(t, noUrl, ['--cluster-redis', REDIS_URL]),
  ]);
  const [w1, w2] = await Promise.all([
    startWorker(t, noUrl, 'w1', { env: workerEnv, extraArgs: ['--cluster-redis', REDIS_URL] }),
    // a static --coordinator combined with discovery: c1 is dialed once, not twice
    startWorker(t, full, 'w2', { env: workerEnv, coordinator: rpcOf(c1) }),
  ]);
  await Promise.all([waitForWorkers(c1.url, 2, ['echo']), waitForWorkers(c2.url, 2, ['echo'])]);
  for (const c of [c1, c2]) {
    const res = await c.client.infer('echo', x);
    assert.deepEqual(res.outputs[0]!.data, [5, 6]);
    assert.deepEqual((await adminWorkers(c.url)).map((w) => w.id).sort(), ['w1', 'w2']);
  }
  const view = await waitFor(
    'c1 to list 2 coordinators and 2 workers',
    async () => {
      const v = await cluster(c1.url);
      return v.members.length === 4 ? v : undefined;
    },
    30_000,
  );
  assert.equal(view.enabled, true);
  assert.equal(view.redis.up, true);
  assert.deepEqual(
    view.members
      .filter((m) => m.role === 'coordinator')
      .map((m) => m.rpc)
      .sort(),
    [rpcOf(c1), rpcOf(c2)].sort(),
  );
  assert.deepEqual(view.members.find((m) => m.id === 'w1')?.models, ['echo']);
  assert.equal(view.members.filter((m) => m.self).length, 1);
  const metrics = await (await fetch(`${c1.url}/metrics`)).text();
  assert.match(metrics, /^infergrid_cluster_members\{role="worker"\} 2$/m);
  assert.match(metrics, /^infergrid_cluster_members\{role="coordinator"\} 2$/m);
  assert.match(metrics, /^infergrid_cluster_redis_up 1$/m);

  // a third coordinator, started later, is found by both workers
  const c3 = await startCoordinator(t, full);
  await waitForWorkers(c3.url, 2, ['echo']);
  assert.deepEqual((await c3.client.infer('echo', x)).outputs[0]!.data, [5, 6]);

  // c2 stops: it deletes its lease, and the workers stop dialing it
  const c2Rpc = rpcOf(c2);
  assert.equal(await c2.stop(), 0);
  for (const w of [w1, w2]) {
    await waitFor(
      `${w === w1 ? 'w1' : 'w2'} to stop dialing c2`,
      () =>
        w
          .output()
          .split('\n')
          .some((line) => line.includes('no longer dialing it') && line.includes(c2Rpc)),
      30_000,
    );
  }
  const after = await waitFor(
    'c1 to drop c2',
    async () => {
      const v = await cluster(c1.url);
      return v.members.some((m) => m.rpc === c2Rpc) ? undefined : v;
    },
    30_000,
  );
  assert.deepEqual(
    after.members
      .filter((m) => m.role === 'coordinator')
      .map((m) => m.rpc)
      .sort(),
    [rpcOf(c1), rpcOf(c3)].sort(),
  );
  // the others serve on
  for (const c of [c1, c3]) assert.deepEqual((await c.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
  // c1 was never dialed twice by w2 (static and discovered): no "id in use" refusal
  assert.doesNotMatch(w2.output(), /is in use/);
});

test('cluster - a coordinator on a wildcard RPC host without an advertised host refuses to start', {
  timeout: 60_000,
}, async (t) => {
  const ns = await namespace(t);
  const config = writeConfig(t, configYaml(ns, true));
  await assert.rejects(
    spawnInfergrid(t, [
      'coordinator',
      '--config',
      config,
      '--port',
      '0',
      '--rpc-port',
      '0',
      '--rpc-host',
      '0.0.0.0',
    ]),
    (err: Error) => {
      assert.match(err.message, /exited with 1 before it was ready/);
      assert.match(err.message, /wildcard address "0\.0\.0\.0"/);
      assert.match(err.message, /--advertise-host/);
      return true;
    },
  );
  // with one, it starts and announces the advertised address
  const c = await spawnInfergrid(t, [
    'coordinator',
    '--config',
    config,
    '--port',
    '0',
    '--rpc-port',
    '0',
    '--rpc-host',
    '0.0.0.0',
    '--advertise-host',
    '127.0.0.1',
  ]);
  const view = await cluster(`http://127.0.0.1:${c.ready.httpPort}`);
  assert.deepEqual(
    view.members.map((m) => m.rpc),
    [`127.0.0.1:${c.ready.rpcPort}`],
  );
});

test('cluster - a coordinator found through Redis must still pass the RPC handshake; forged records outside cluster.allow are ignored', {
  timeout: 120_000,
}, async (t) => {
  const ns = await namespace(t);
  const config = writeConfig(t, configYaml(ns, true));
  const good = await startCoordinator(t, config);
  // announced like any coordinator, but holding another cluster secret
  const impostor = await startCoordinator(t, config, [], { INFERGRID_TOKEN: 'an-impostor-secret' });
  const w1 = await startWorker(t, config, 'w1');
  await waitForWorkers(good.url, 1, ['echo']);
  await waitFor(
    'w1 to fail the impostor handshake',
    () =>
      w1
        .output()
        .split('\n')
        .some((line) => line.includes('could not connect') && line.includes(impostor.rpcAddress)),
    30_000,
  );
  assert.deepEqual(await adminWorkers(impostor.url), [], 'the impostor gets no worker');
  assert.deepEqual((await good.client.infer('echo', x)).outputs[0]!.data, [5, 6]);

  // a Redis writer points a coordinator record at an address outside cluster.allow
  const raw = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await raw.connect();
  t.after(() => raw.disconnect());
  const forged = {
    id: 'forged',
    role: 'coordinator',
    rpc: '203.0.113.7:9000',
    protocolVersion: 2,
    identity: 'cluster',
    startedAt: 1,
  };
  await raw.set(`${ns}ig:v1:cluster:member:coordinator:forged`, JSON.stringify(forged), 'PX', 60_000);
  await raw.publish(
    `${ns}ig:v1:cluster:members`,
    JSON.stringify({ type: 'announce', role: 'coordinator', id: 'forged' }),
  );
  const view = await waitFor(
    'the forged record counted as disallowed',
    async () => {
      const res = await fetch(`${good.url}/admin/cluster`);
      const v = (await res.json()) as ClusterView & { counters: { ignored: { disallowed: number } } };
      return v.counters.ignored.disallowed >= 1 ? v : undefined;
    },
    30_000,
  );
  assert.ok(!view.members.some((m) => m.id === 'forged'));
  // the worker read the same record and said why it left it alone
  await waitFor(
    'w1 to ignore the forged record',
    () =>
      w1
        .output()
        .split('\n')
        .some((line) => line.includes('"reason":"disallowed"') && line.includes('coordinator:forged')),
    30_000,
  );
  assert.ok(
    !w1
      .output()
      .split('\n')
      .some((line) => line.includes('could not connect') && line.includes('203.0.113.7')),
    'the worker never dialed it',
  );
  assert.equal(w1.child.exitCode, null, 'the worker is still running');
});
