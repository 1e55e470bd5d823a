/**
 * Routing features end to end: shard-key affinity over real workers, and hedging a slow
 * worker's request to a fast one (the slow attempt is cancelled on its worker).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  adminWorkers,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const x = [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }];

function config(latencyMs: number, routing: string): string {
  return `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 5000 }
models:
  - name: m
    backend: sim
    sim: { latencyMs: ${latencyMs} }
    routing: ${routing}
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;
}

async function requestsById(url: string): Promise<Record<string, number>> {
  return Object.fromEntries((await adminWorkers(url)).map((w) => [w.id, w.requests]));
}

function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(after).map((id) => [id, after[id]! - (before[id] ?? 0)]));
}

test('routing - requests with the same shard key reach the same worker; other keys spread', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, config(0, '{ strategy: round-robin }'));
  const coordinator = await startCoordinator(t, file);
  await Promise.all(
    ['a', 'b', 'c'].map((id) => startWorker(t, file, id, { coordinator: coordinator.rpcAddress })),
  );
  await waitForWorkers(coordinator.url, 3, ['m']);

  let before = await requestsById(coordinator.url);
  for (let i = 0; i < 30; i++)
    await coordinator.client.infer('m', x, { parameters: { shard_key: 'user-42' } });
  const sameKey = delta(before, await requestsById(coordinator.url));
  assert.deepEqual(
    Object.values(sameKey).sort(),
    [0, 0, 30],
    `one worker took every request of the key: ${JSON.stringify(sameKey)}`,
  );

  before = await requestsById(coordinator.url);
  for (let i = 0; i < 60; i++)
    await coordinator.client.infer('m', x, { parameters: { shard_key: `user-${i}` } });
  const manyKeys = delta(before, await requestsById(coordinator.url));
  assert.ok(
    Object.values(manyKeys).every((n) => n >= 5),
    `60 keys spread over all three workers: ${JSON.stringify(manyKeys)}`,
  );

  // the key's worker leaves: its keys go to the next worker in their order, and stay there
  const owner = Object.entries(sameKey).find(([, n]) => n === 30)![0];
  await fetch(`${coordinator.url}/admin/workers/${owner}`, { method: 'DELETE' });
  before = await requestsById(coordinator.url);
  for (let i = 0; i < 10; i++)
    await coordinator.client.infer('m', x, { parameters: { shard_key: 'user-42' } });
  const moved = delta(before, await requestsById(coordinator.url));
  assert.deepEqual(
    Object.values(moved).sort(),
    [0, 10],
    `the key moved as a whole to one other worker: ${JSON.stringify(moved)}`,
  );
});

test('routing - a hedged request is answered by the fast worker and cancelled on the slow one', {
  timeout: 60_000,
}, async (t) => {
  const routing = '{ strategy: round-robin, hedge: { afterMs: 100 } }';
  const slowConfig = writeConfig(t, config(30_000, routing));
  const fastConfig = writeConfig(t, config(0, routing));
  const coordinator = await startCoordinator(t, fastConfig);
  await startWorker(t, slowConfig, 'slow', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  await startWorker(t, fastConfig, 'fast', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 2, ['m']);

  // round-robin starts with the slow worker (it joined first); the hedge goes to the fast one
  const answer = await coordinator.client.infer('m', x);
  assert.deepEqual(answer.outputs[0]!.data, [1]);
  const body = (await (await fetch(`${coordinator.url}/admin/workers`)).json()) as {
    routing: { hedges: number };
  };
  assert.equal(body.routing.hedges, 1);
  const counts = await requestsById(coordinator.url);
  assert.deepEqual(counts, { slow: 1, fast: 1 });
  // the losing attempt is cancelled on its worker: its own in-flight count drops to 0
  await waitFor(
    'the slow worker to drop the cancelled attempt',
    async () => {
      const slow = (await adminWorkers(coordinator.url)).find((w) => w.id === 'slow') as unknown as {
        reportedInFlight: number;
        inFlight: number;
      };
      return slow.inFlight === 0 && slow.reportedInFlight === 0;
    },
    10_000,
  );
});
