/**
 * Asynchronous requests across coordinators sharing Redis: a slow request submitted on one
 * coordinator is cancelled with a DELETE sent to the other, and the run on the worker is
 * aborted (the worker records it failed, long before the model's minute would have passed).
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import {
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * A model whose every run takes a minute: only a cancel ends it within the test. The shared
 * Redis is the cache's tier, or only the cluster's (then the coordinators open it for
 * asynchronous requests themselves, and the worker finds them through it).
 */
const CONFIG = (namespace: string, shared: 'cache' | 'cluster') => `
models:
  - name: slow
    backend: sim
    sim: { latencyMs: 60000 }
    inputs: [{ name: x, datatype: FP32, shape: [-1, 1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 1] }]
${shared === 'cache' ? 'cache' : 'cluster'}: { redis: { url: "${REDIS_URL}", namespace: "${namespace}" } }
`;

interface RequestBody {
  id: string;
  status: string;
  error?: { code: string; message: string };
}

async function pollRequest(url: string, id: string): Promise<RequestBody> {
  const res = await fetch(`${url}/v2/requests/${id}`);
  assert.equal(res.status, 200, `${url}: ${res.status}`);
  return (await res.json()) as RequestBody;
}

async function workerFigures(url: string): Promise<{ success: number; fail: number }> {
  const body = (await (await fetch(`${url}/v2/models/slow/stats`)).json()) as {
    model_stats: { inference_stats: { success: { count: number }; fail: { count: number } } }[];
  };
  const stats = body.model_stats[0]!.inference_stats;
  return { success: Number(stats.success.count), fail: Number(stats.fail.count) };
}

for (const shared of ['cache', 'cluster'] as const) {
  test(`async cancel (${shared}.redis) - a request submitted on coordinator A is cancelled by a DELETE on B, and the worker stops its run`, {
    timeout: 90_000,
  }, async (t) => {
    const namespace = `test-${randomUUID()}:`;
    const config = writeConfig(t, CONFIG(namespace, shared));
    const a = await startCoordinator(t, config);
    const b = await startCoordinator(t, config);
    t.after(() => fetch(`${a.url}/admin/cache`, { method: 'DELETE' }).catch(() => {}));
    // one worker serving both coordinators: dialing both, or finding both through the cluster's Redis
    await startWorker(
      t,
      config,
      'w1',
      shared === 'cache' ? { coordinator: a.rpcAddress, extraArgs: ['--coordinator', b.rpcAddress] } : {},
    );
    await waitForWorkers(a.url, 1, ['slow']);
    await waitForWorkers(b.url, 1, ['slow']);

    const submitted = await fetch(`${a.url}/v2/models/slow/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', prefer: 'respond-async' },
      body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [1] }] }),
    });
    assert.equal(submitted.status, 202);
    const { id } = (await submitted.json()) as { id: string };
    // the run is on the worker (A counts it in flight) and B sees it pending through Redis
    await waitFor('the run to reach the worker', async () => {
      const res = await fetch(`${a.url}/admin/workers`);
      const { workers } = (await res.json()) as { workers: { inFlight: number }[] };
      return workers[0]?.inFlight === 1;
    });
    await waitFor(
      'B to see the request pending',
      async () => (await pollRequest(b.url, id)).status === 'pending',
    );

    const del = await fetch(`${b.url}/v2/requests/${id}`, { method: 'DELETE' });
    const body = await del.json();
    assert.equal(del.status, 200, JSON.stringify(body));
    assert.deepEqual(body, { id, action: 'cancelled' }, 'A confirmed the cancel through Redis');

    for (const url of [a.url, b.url]) {
      const record = await pollRequest(url, id);
      assert.equal(record.status, 'failed', url);
      assert.equal(record.error?.code, 'CANCELLED', url);
    }
    // the worker saw the cancel: its run ended failed, not after the model's minute with a result
    const figures = await waitFor('the worker to record the aborted run', async () => {
      const f = await workerFigures(a.url);
      return f.fail === 1 ? f : undefined;
    });
    assert.equal(figures.success, 0);
    const workers = (await (await fetch(`${a.url}/admin/workers`)).json()) as {
      workers: { inFlight: number }[];
    };
    assert.equal(workers.workers[0]!.inFlight, 0, 'A released the request');

    // a second DELETE, now on A, forgets the finished request everywhere
    const forget = await fetch(`${a.url}/v2/requests/${id}`, { method: 'DELETE' });
    assert.deepEqual(await forget.json(), { id, action: 'forgotten' });
    assert.equal((await fetch(`${b.url}/v2/requests/${id}`)).status, 404);
  });
}
