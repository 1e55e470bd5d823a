/**
 * Who dials whom: workers dialing the coordinator, the coordinator dialing static workers,
 * credentials, and reconnection when either side restarts — all with real processes.
 */

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import {
  adminWorkers,
  spawnInfergrid,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const CONFIG = `
auth: { token: topology-secret }
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 }
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;

const x = [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], data: [5, 6] }];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

test('topology - a coordinator dials static workers and round-robins over them', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const [a, b] = await Promise.all([
    startWorker(t, config, 'sa', { port: 0 }),
    startWorker(t, config, 'sb', { port: 0 }),
  ]);
  const coordinator = await startCoordinator(t, config, [
    '--worker',
    `127.0.0.1:${a.ready.port}`,
    '--worker',
    `127.0.0.1:${b.ready.port}`,
  ]);
  await waitForWorkers(coordinator.url, 2, ['echo']);
  for (let i = 0; i < 10; i++) {
    const res = await coordinator.client.infer('echo', x);
    assert.deepEqual(res.outputs[0]!.data, [5, 6]);
  }
  const workers = await adminWorkers(coordinator.url);
  assert.deepEqual(
    workers.map((w) => [w.id, w.requests]).sort(),
    [
      ['sa', 5],
      ['sb', 5],
    ],
    'round-robin splits evenly',
  );
  assert.ok(workers.every((w) => w.address?.startsWith('127.0.0.1:')));
});

test('topology - a worker with the wrong cluster secret is refused and says why', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const intruder = await startWorker(t, config, 'intruder', {
    coordinator: coordinator.rpcAddress,
    env: { INFERGRID_TOKEN: 'wrong' },
  });
  await waitFor('the refusal in the worker log', () =>
    intruder.output().includes('proved a different key for worker \\"intruder\\"'),
  );
  assert.deepEqual(await adminWorkers(coordinator.url), []);
});

test('topology - workers rejoin a restarted coordinator, and a coordinator redials a restarted static worker', {
  timeout: 90_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const rpcPort = await freePort();
  const first = await startCoordinator(t, config, ['--rpc-port', String(rpcPort)]);
  await startWorker(t, config, 'dialer', { coordinator: `127.0.0.1:${rpcPort}` });
  await waitForWorkers(first.url, 1, ['echo']);
  assert.equal(await first.stop(), 0, 'coordinator exits 0 on SIGTERM');

  const second = await startCoordinator(t, config, ['--rpc-port', String(rpcPort)]);
  await waitForWorkers(second.url, 1, ['echo']);
  assert.deepEqual((await second.client.infer('echo', x)).outputs[0]!.data, [5, 6]);

  const workerPort = await freePort();
  const staticWorker = await startWorker(t, config, 'static', { port: workerPort });
  const third = await spawnInfergrid(t, [
    'coordinator',
    '--config',
    config,
    '--port',
    '0',
    '--rpc-port',
    '0',
    '--worker',
    `127.0.0.1:${workerPort}`,
  ]);
  const thirdUrl = `http://127.0.0.1:${third.ready.httpPort}`;
  await waitForWorkers(thirdUrl, 1, ['echo']);
  staticWorker.child.kill('SIGKILL');
  await waitFor(
    'the dead static worker to be dropped',
    async () => (await adminWorkers(thirdUrl)).length === 0,
  );
  await startWorker(t, config, 'static', { port: workerPort });
  const rejoined = await waitForWorkers(thirdUrl, 1, ['echo']);
  assert.equal(rejoined[0]!.id, 'static');
});

test('topology - a worker that dials the coordinator and is dialed by it stays connected once', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const workerPort = await freePort();
  const coordinator = await startCoordinator(t, config, ['--worker', `127.0.0.1:${workerPort}`]);
  await startWorker(t, config, 'both', { port: workerPort, coordinator: coordinator.rpcAddress });
  await waitFor('the second connection to be refused', () =>
    coordinator.output().includes('is already connected to this coordinator'),
  );
  const [first] = await waitForWorkers(coordinator.url, 1, ['echo']);
  for (let i = 0; i < 5; i++)
    assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
  const after = await adminWorkers(coordinator.url);
  assert.equal(after.length, 1);
  assert.equal(
    (after[0] as unknown as { connectedAt: string }).connectedAt,
    (first as unknown as { connectedAt: string }).connectedAt,
    'the first connection was never replaced',
  );
  assert.equal(after[0]!.requests, 5);
});
