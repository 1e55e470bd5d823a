/**
 * Shard keys across coordinators: two coordinators, three workers dialing both. Every key sent
 * through either coordinator reaches the same worker (the one rendezvous hashing names for it),
 * and when one worker stops only its own keys move, to the same new worker from both sides.
 * Which worker answered is what the model itself says (its process id).
 */

import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { hashString, rendezvousOrder } from '../../src/routing/index.ts';
import {
  type RunningCoordinator,
  type Spawned,
  adminWorkers,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const MODEL = fileURLToPath(new URL('../fixtures/models/which-process.ts', import.meta.url));
const WORKERS = ['w1', 'w2', 'w3'];
const KEYS = Array.from({ length: 60 }, (_, i) => `user-${i}`);

/** The pid of the worker process that served `key` through `coordinator`. */
async function servedBy(coordinator: RunningCoordinator, key: string): Promise<number> {
  const res = await fetch(`${coordinator.url}/v2/models/m/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      parameters: { shard_key: key },
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }],
    }),
  });
  const body = (await res.json()) as { outputs?: { name: string; data: number[] }[] };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.outputs!.find((o) => o.name === 'pid')!.data[0]!;
}

/** Worker id of each key, sent through both coordinators (alternating which goes first); asserts they agree. */
async function placement(
  a: RunningCoordinator,
  b: RunningCoordinator,
  idOfPid: Map<number, string>,
): Promise<Map<string, string>> {
  const placed = new Map<string, string>();
  for (const [i, key] of KEYS.entries()) {
    const order = i % 2 === 0 ? [a, b] : [b, a];
    const pids = [];
    for (const coordinator of order) pids.push(await servedBy(coordinator, key));
    assert.equal(pids[0], pids[1], `key ${key}: the same worker through either coordinator`);
    const id = idOfPid.get(pids[0]!);
    assert.ok(id, `key ${key}: served by pid ${pids[0]}, not a known worker`);
    placed.set(key, id);
  }
  return placed;
}

test('routing - a shard key reaches the same worker through any coordinator; a stopped worker moves only its keys', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 5000 }
routing: { strategy: round-robin }
models:
  - name: m
    backend: js
    path: ${MODEL}
`,
  );
  const a = await startCoordinator(t, config);
  const b = await startCoordinator(t, config);
  const workers = new Map<string, Spawned>();
  for (const id of WORKERS) {
    workers.set(
      id,
      await startWorker(t, config, id, {
        coordinator: a.rpcAddress,
        extraArgs: ['--coordinator', b.rpcAddress],
      }),
    );
  }
  await waitForWorkers(a.url, 3, ['m']);
  await waitForWorkers(b.url, 3, ['m']);
  const idOfPid = new Map((await adminWorkers(a.url)).map((w) => [w.pid, w.id]));
  assert.equal(idOfPid.size, 3);

  const before = await placement(a, b, idOfPid);
  for (const key of KEYS) {
    assert.equal(
      before.get(key),
      rendezvousOrder(hashString(key), WORKERS)[0],
      `key ${key}: rendezvous's pick`,
    );
  }
  const owned = (placed: Map<string, string>, id: string) => KEYS.filter((k) => placed.get(k) === id);
  for (const id of WORKERS) assert.ok(owned(before, id).length > 0, `${id} owns some of the 60 keys`);

  // one worker stops: both coordinators see it leave
  const gone = 'w2';
  await workers.get(gone)!.stop();
  for (const coordinator of [a, b]) {
    await waitFor(`${coordinator.url} to see ${gone} leave`, async () =>
      (await adminWorkers(coordinator.url)).every((w) => w.id !== gone),
    );
  }
  const after = await placement(a, b, idOfPid);
  for (const key of KEYS) {
    if (before.get(key) === gone) {
      assert.notEqual(after.get(key), gone);
      assert.equal(
        after.get(key),
        rendezvousOrder(hashString(key), WORKERS)[1],
        `key ${key}: its next worker`,
      );
    } else {
      assert.equal(after.get(key), before.get(key), `key ${key} stayed on ${before.get(key)}`);
    }
  }
  const moved = KEYS.filter((k) => after.get(k) !== before.get(k));
  assert.deepEqual(moved, owned(before, gone), `only ${gone}'s keys moved`);
});
