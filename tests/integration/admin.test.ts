/**
 * The admin API against real processes: add a static worker at run time, drain and remove a
 * worker (its in-flight request still completes), keep a removed worker out until it is
 * re-admitted, and weighted balancing from the weight given at POST.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const CONFIG = `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 }
models:
  - name: slow
    backend: sim
    sim: { latencyMs: 800 }
    routing: { strategy: weighted }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: echo
    backend: sim
    routing: { strategy: weighted }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;
const x = [{ name: 'x', datatype: 'FP32', shape: [1], data: [7] }];

test('admin - add a static worker with a weight, drain and remove workers, re-admit one', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const { url, client } = coordinator;
  const inbound = await startWorker(t, config, 'inbound', { coordinator: coordinator.rpcAddress });
  const listening = await startWorker(t, config, 'static', { port: 0 });
  await waitForWorkers(url, 1, ['echo']);

  await t.test('POST /admin/workers dials a static worker, with the weight given', async () => {
    const bad = await post(`${url}/admin/workers`, JSON.stringify({ address: 'nonsense' }));
    assert.equal(bad.status, 400);
    assert.match(bad.json.error!, /"address" "nonsense" is not host:port/);
    const res = await post(
      `${url}/admin/workers`,
      JSON.stringify({ address: `127.0.0.1:${listening.ready.port}`, weight: 3 }),
    );
    assert.equal(res.status, 202);
    const workers = await waitForWorkers(url, 2, ['echo']);
    assert.equal(workers.find((w) => w.id === 'static')!.weight, 3);
    // weighted: 3 of every 4 requests go to the static worker
    const before = Object.fromEntries(workers.map((w) => [w.id, w.requests]));
    for (let i = 0; i < 40; i++) await client.infer('echo', x);
    const after = Object.fromEntries((await adminWorkers(url)).map((w) => [w.id, w.requests]));
    assert.equal(after.static! - before.static!, 30);
    assert.equal(after.inbound! - before.inbound!, 10);
  });

  await t.test('GET /admin/workers shows health, circuits and routing totals', async () => {
    const body = (await (await fetch(`${url}/admin/workers`)).json()) as {
      workers: {
        id: string;
        health: { state: string; checks: number };
        models: { name: string; circuit: string; picks: number }[];
      }[];
      routing: { retries: number; panicPicks: number };
    };
    for (const w of body.workers) {
      assert.equal(w.health.state, 'healthy');
      assert.ok(w.models.every((m) => m.circuit === 'closed'));
    }
    assert.equal(body.routing.retries, 0);
    assert.equal(body.routing.panicPicks, 0);
  });

  await t.test(
    'DELETE /admin/workers/{id} drains: the running request completes, then the worker is gone',
    async () => {
      // both workers get one slow request each (weighted 3:1 starts with the heavier one)
      const running = [
        client.infer('slow', x),
        client.infer('slow', x),
        client.infer('slow', x),
        client.infer('slow', x),
      ];
      await waitFor(
        'the inbound worker to be running a request',
        async () => ((await adminWorkers(url)).find((w) => w.id === 'inbound')?.inFlight ?? 0) > 0,
      );
      const removal = await fetch(`${url}/admin/workers/inbound`, { method: 'DELETE' });
      assert.equal(removal.status, 200);
      assert.deepEqual(await removal.json(), { removed: 'inbound', drained: true });
      for (const r of await Promise.all(running)) assert.deepEqual(r.outputs[0]!.data, [7]);
      assert.deepEqual(
        (await adminWorkers(url)).map((w) => w.id),
        ['static'],
      );
      const missing = await fetch(`${url}/admin/workers/nobody`, { method: 'DELETE' });
      assert.equal(missing.status, 404);
    },
  );

  await t.test('a removed worker that dials in again is refused until it is re-admitted', async () => {
    // the inbound worker keeps redialing; every attempt is refused while it is removed
    const body = (await (await fetch(`${url}/admin/workers`)).json()) as { routing: { removed: string[] } };
    assert.deepEqual(body.routing.removed, ['inbound']);
    await waitFor('the worker to be refused when it redials', () =>
      inbound.output().includes('was removed by an operator'),
    );
    assert.deepEqual(
      (await adminWorkers(url)).map((w) => w.id),
      ['static'],
      'still out',
    );
    const readmit = await post(`${url}/admin/workers`, JSON.stringify({ id: 'inbound' }));
    assert.equal(readmit.status, 200);
    await waitForWorkers(url, 2, ['echo']);
    const again = await post(`${url}/admin/workers`, JSON.stringify({ id: 'inbound' }));
    assert.equal(again.status, 404, 'nothing left to re-admit');
  });

  await t.test('removing a static worker stops redialing it', async () => {
    const removal = await fetch(`${url}/admin/workers/static`, { method: 'DELETE' });
    assert.deepEqual(await removal.json(), { removed: 'static', drained: true });
    const body = (await (await fetch(`${url}/admin/workers`)).json()) as {
      routing: { staticWorkers: string[]; removed: string[] };
    };
    assert.deepEqual(body.routing.staticWorkers, []);
    assert.deepEqual(
      body.routing.removed,
      ['static'],
      'a removed static worker is kept out too, should it dial in',
    );
    const bad = await fetch(`${url}/admin/workers/inbound?timeout_ms=9999999999999`, { method: 'DELETE' });
    assert.equal(bad.status, 400);
    assert.match(
      ((await bad.json()) as { error: string }).error,
      /timeout_ms must be a whole number of ms from 0 to 2147483647/,
    );
    assert.deepEqual(
      (await adminWorkers(url)).map((w) => w.id),
      ['inbound'],
    );
  });
});
