/**
 * The shared control plane with real processes: two coordinators with the same `cluster.redis`
 * settings and workers that dial both (static addresses, no discovery). A repository unload on
 * A makes the model unavailable on B, a load brings it back, a model defined at run time on A
 * serves on B; a traffic split set on A is what B answers and routes by; a worker removed on A
 * is removed on B; a third coordinator started after the changes converges to all of them; a
 * re-admission on A lets the worker back everywhere. The time each change took to show on the
 * other coordinator is printed as a JSON line ({"controlPlanePropagationMs": ...}): it includes
 * the poll interval of waitFor (25 ms), so it is an upper bound.
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const SIM_YAML = `
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]`;
const SIM_JSON = {
  backend: 'sim',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
};

interface IndexEntry {
  name: string;
  version: string;
  state: string;
  reason: string;
}

async function stateOf(url: string, model: string): Promise<string[]> {
  const res = await post(`${url}/v2/repository/index`, '{}');
  assert.equal(res.status, 200, res.text);
  return (JSON.parse(res.text) as IndexEntry[])
    .filter((e) => e.name === model)
    .map((e) => `${e.version}:${e.state}${e.reason ? `(${e.reason})` : ''}`);
}

function infer(url: string, model: string, data = [1]) {
  return post(
    `${url}/v2/models/${model}/infer`,
    JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [data.length], data }] }),
  );
}

async function getJson(url: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function removed(url: string): Promise<string[]> {
  const { json } = await getJson(`${url}/admin/workers`);
  return (json.routing as { removed: string[] }).removed;
}

/** Runs `change` on one coordinator and waits for `arrived` on another; returns the ms between. */
async function propagation(
  what: string,
  change: () => Promise<void>,
  arrived: () => Promise<boolean>,
): Promise<number> {
  await change();
  const startedMs = performance.now();
  await waitFor(what, async () => (await arrived()) || undefined, 20_000);
  return Math.round(performance.now() - startedMs);
}

test('cluster control - changes made on one coordinator reach the others; a late coordinator converges', {
  timeout: 180_000,
}, async (t) => {
  const namespace = `test-${randomUUID()}:`;
  t.after(async () => {
    const redis = new Redis('redis://127.0.0.1:6379');
    await redis.del(`${namespace}ig:v1:cluster:control`, `${namespace}ig:v1:cluster:control:seq`);
    redis.disconnect();
  });
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 300 }
logging: { level: warn }
cluster:
  redis: { url: "redis://127.0.0.1:6379", namespace: "${namespace}" }
  reconcileIntervalMs: 1000
models:
  - name: m${SIM_YAML}
  - name: c
    version: 1${SIM_YAML}
  - name: c
    version: 2${SIM_YAML}
`,
  );
  const a = await startCoordinator(t, file);
  const b = await startCoordinator(t, file);
  const both = ['--coordinator', b.rpcAddress];
  await startWorker(t, file, 'w1', { coordinator: a.rpcAddress, extraArgs: both });
  await startWorker(t, file, 'w2', { coordinator: a.rpcAddress, extraArgs: both });
  for (const c of [a, b]) await waitForWorkers(c.url, 2, ['m', 'c']);
  const figures: Record<string, number> = {};

  // ---- repository unload on A: unavailable on B
  figures.unload = await propagation(
    'm unloaded on B',
    async () => {
      const res = await post(`${a.url}/v2/repository/models/m/unload`, '{}');
      assert.equal(res.status, 200, res.text);
    },
    async () => (await stateOf(b.url, 'm')).every((s) => s.includes('(unloaded)')),
  );
  const refused = await infer(b.url, 'm');
  assert.equal(refused.status, 404, refused.text);
  assert.match(refused.text, /unloaded/);
  assert.equal((await fetch(`${b.url}/v2/models/m/ready`)).status !== 200, true);

  // ---- and loaded back on A: ready on B
  figures.load = await propagation(
    'm ready on B again',
    async () => {
      const res = await post(`${a.url}/v2/repository/models/m/load`, '{}');
      assert.equal(res.status, 200, res.text);
    },
    async () => (await stateOf(b.url, 'm')).join() === '1:READY',
  );
  assert.equal((await infer(b.url, 'm')).status, 200);

  // ---- a model defined at run time on A serves on B (B checks its config itself)
  figures.define = await propagation(
    'fresh ready on B',
    async () => {
      const res = await post(
        `${a.url}/v2/repository/models/fresh/load`,
        JSON.stringify({ parameters: { config: { name: 'fresh', ...SIM_JSON } } }),
      );
      assert.equal(res.status, 200, res.text);
    },
    async () => (await stateOf(b.url, 'fresh')).join() === '1:READY',
  );
  const echoed = await infer(b.url, 'fresh', [4, 5]);
  assert.equal(echoed.status, 200, echoed.text);
  // both workers host it once each, ready, as both coordinators see it
  for (const c of [a, b]) {
    const workers = await adminWorkers(c.url);
    for (const w of workers)
      assert.deepEqual(
        w.models.filter((m) => m.name === 'fresh').map((m) => m.state),
        ['ready'],
        `${w.id} on ${c.url}`,
      );
  }

  // ---- a traffic split set on A: B answers it and routes by it (without it, the newest, 2)
  figures.traffic = await propagation(
    'the split on B',
    async () => {
      const res = await fetch(`${a.url}/admin/models/c/traffic`, {
        method: 'PUT',
        body: '{"1": 100}',
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(res.status, 200, await res.text());
    },
    async () =>
      JSON.stringify((await getJson(`${b.url}/admin/models/c/traffic`)).json.traffic) === '{"1":100}',
  );
  for (let i = 0; i < 20; i++) {
    const res = await infer(b.url, 'c');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.model_version, '1', 'B routes unversioned requests by the split set on A');
  }

  // ---- a worker removed on A is removed on B
  figures.removal = await propagation(
    'w2 removed on B',
    async () => {
      const res = await fetch(`${a.url}/admin/workers/w2?timeout_ms=2000`, { method: 'DELETE' });
      assert.equal(res.status, 200, await res.text());
    },
    async () =>
      (await removed(b.url)).includes('w2') && !(await adminWorkers(b.url)).some((w) => w.id === 'w2'),
  );

  // ---- a third coordinator started now converges, with a worker of its own
  const c3 = await startCoordinator(t, file);
  await startWorker(t, file, 'w3', {
    coordinator: c3.rpcAddress,
    extraArgs: ['--coordinator', a.rpcAddress],
  });
  await waitFor('the late coordinator converged', async () => {
    const [m, fresh] = [await stateOf(c3.url, 'm'), await stateOf(c3.url, 'fresh')];
    const traffic = (await getJson(`${c3.url}/admin/models/c/traffic`)).json.traffic;
    return (
      m.join() === '1:READY' &&
      fresh.join() === '1:READY' &&
      JSON.stringify(traffic) === '{"1":100}' &&
      (await removed(c3.url)).includes('w2')
    );
  });
  assert.equal((await infer(c3.url, 'fresh')).status, 200);

  // ---- re-admitted on A: back on B (it redials B itself)
  figures.readmit = await propagation(
    'w2 back on B',
    async () => {
      const res = await post(`${a.url}/admin/workers`, JSON.stringify({ id: 'w2' }));
      assert.equal(res.status, 200, res.text);
    },
    async () =>
      !(await removed(b.url)).includes('w2') && (await adminWorkers(b.url)).some((w) => w.id === 'w2'),
  );
  await waitFor(
    'w2 unblocked on the late coordinator too',
    async () => !(await removed(c3.url)).includes('w2'),
  );

  // what B counted: records applied from A, by kind
  const metrics = await (await fetch(`${b.url}/metrics`)).text();
  const applied = (kind: string) =>
    Number(
      metrics.match(new RegExp(`infergrid_cluster_control_applied_total\\{kind="${kind}"\\} (\\d+)`))?.[1],
    );
  assert.equal(applied('repository'), 3, 'unload, load, define');
  assert.equal(applied('traffic'), 1);
  assert.equal(applied('removal'), 2, 'removal and re-admission');
  assert.match(metrics, /infergrid_cluster_control_pending_writes 0/);

  // ---- a hostile record (written straight into Redis) naming a file outside the repository
  // roots: B checks it as it checks an operator's load, refuses it, and nothing is loaded
  const redis = new Redis('redis://127.0.0.1:6379');
  t.after(() => redis.disconnect());
  const hash = `${namespace}ig:v1:cluster:control`;
  const seq = await redis.incr(`${hash}:seq`);
  const evil = { name: 'evil', ...SIM_JSON, backend: 'onnx', path: '/etc/passwd' };
  await redis.hset(
    hash,
    'repository:evil',
    JSON.stringify({
      seq,
      kind: 'repository',
      target: 'evil',
      op: 'load',
      payload: { configs: [evil] },
      by: 'intruder',
      at: Date.now(),
    }),
  );
  await redis.publish(`${hash}:feed`, JSON.stringify({ field: 'repository:evil', seq }));
  await waitFor('B refused the hostile record', async () => {
    const text = await (await fetch(`${b.url}/metrics`)).text();
    return Number(text.match(/infergrid_cluster_control_apply_failures_total (\d+)/)?.[1]) >= 1;
  });
  assert.deepEqual(await stateOf(b.url, 'evil'), [], 'not declared on B');
  for (const w of await adminWorkers(b.url)) assert.ok(!w.models.some((m) => m.name === 'evil'));
  assert.match(
    b.output(),
    /could not apply a record from another coordinator.*only files inside repository.roots|only files inside repository.roots.*could not apply a record/,
  );

  // the lead's figure for the docs: ms from A's answer to B showing the change (poll: 25 ms)
  console.log(JSON.stringify({ controlPlanePropagationMs: figures }));
});
