/**
 * A worker whose event loop is blocked by a long model run (longer than its own
 * peerTimeoutMs) must not blame the coordinator for the silence when it wakes up: the
 * coordinator's heartbeats are sitting in its socket.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  adminWorkers,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const MODEL = `
models:
  - name: stall
    backend: js
    path: ${fileURLToPath(new URL('../fixtures/models/busy-wait.ts', import.meta.url))}
    options: { blockMs: 1500 }
`;

test('stall - a worker blocked longer than its peer timeout keeps its connection', {
  timeout: 60_000,
}, async (t) => {
  const coordinatorConfig = writeConfig(
    t,
    `rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 10000 }\n${MODEL}`,
  );
  const workerConfig = writeConfig(t, `rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 1000 }\n${MODEL}`);
  const coordinator = await startCoordinator(t, coordinatorConfig);
  await startWorker(t, workerConfig, 'sleepy', { coordinator: coordinator.rpcAddress });
  const [before] = await waitForWorkers(coordinator.url, 1, ['stall']);
  const x = [{ name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] }];
  for (let i = 0; i < 2; i++)
    assert.deepEqual((await coordinator.client.infer('stall', x)).outputs[0]!.data, [1, 2]);
  // a round trip after the stalls: had the worker dropped the connection, it would have re-registered
  await waitForWorkers(coordinator.url, 1, ['stall']);
  const [after] = await adminWorkers(coordinator.url);
  assert.equal(after!.requests, 2, 'both requests went over one connection');
  assert.equal(
    (after as unknown as { connectedAt: string }).connectedAt,
    (before as unknown as { connectedAt: string }).connectedAt,
    'the worker kept its connection through both stalls',
  );
});
