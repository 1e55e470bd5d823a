/**
 * The response cache with real processes: a repeated request never reaches a worker; a
 * restarted coordinator answers from its SQLite tier (with no worker at all); two coordinators
 * share Redis; fifty identical concurrent requests cost one worker execution; a store that
 * cannot be opened stops the start with a clear error (or is skipped when optional); a Redis
 * that goes away at run time costs misses, never failed requests.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  spawnInfergrid,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  fixtureRepositoryYaml,
  writeConfig,
} from '../fixtures/processes.ts';

const MODEL = (latencyMs: number) => `
models:
  - name: m
    backend: sim
    sim: { latencyMs: ${latencyMs} }
    cache: { enabled: true, ttlMs: 600000 }
    inputs: [{ name: x, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 4] }]
`;
const x = (v: number) => [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [v, v, v, v] }];

async function infer(url: string, v: number, parameters?: Record<string, string>) {
  const res = await fetch(`${url}/v2/models/m/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: x(v), ...(parameters ? { parameters } : {}) }),
  });
  const body = (await res.json()) as {
    outputs?: { data: number[] }[];
    parameters?: Record<string, string>;
    error?: string;
  };
  return { status: res.status, cache: res.headers.get('infergrid-cache'), body };
}

async function executions(url: string): Promise<number> {
  const body = (await (await fetch(`${url}/v2/models/m/stats`)).json()) as {
    model_stats: { inference_count: number }[];
  };
  return body.model_stats[0]?.inference_count ?? 0;
}

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

test('cache - a repeated request is answered from the cache and never reaches a worker', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, MODEL(0));
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  const first = await infer(coordinator.url, 1);
  assert.equal(first.cache, 'miss');
  assert.equal(first.body.parameters?.infergrid_cache, 'miss');
  const second = await infer(coordinator.url, 1);
  assert.equal(second.cache, 'hit');
  assert.deepEqual(second.body.outputs![0]!.data, [1, 1, 1, 1]);
  assert.equal(await executions(coordinator.url), 1, 'the worker ran the model once');
  // bypass neither reads nor writes; refresh recomputes
  assert.equal((await infer(coordinator.url, 1, { cache: 'bypass' })).cache, 'bypass');
  assert.equal((await infer(coordinator.url, 1, { cache: 'refresh' })).cache, 'refresh');
  assert.equal(await executions(coordinator.url), 3);
  const bad = await infer(coordinator.url, 1, { cache: 'sometimes' });
  assert.equal(bad.status, 400);
  const admin = (await (await fetch(`${coordinator.url}/admin/cache`)).json()) as {
    models: Record<string, { hits: number; misses: number }>;
  };
  assert.equal(admin.models.m!.hits, 1);
  assert.equal(admin.models.m!.misses, 1);
  const cleared = (await (
    await fetch(`${coordinator.url}/admin/cache?model=m`, { method: 'DELETE' })
  ).json()) as { removed: number };
  assert.equal(cleared.removed, 1);
  assert.equal((await infer(coordinator.url, 1)).cache, 'miss', 'cleared entries are gone');
});

test('cache - a hit answers the text a miss did, its own id included, and binary outputs when asked', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, MODEL(0));
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  const send = async (body: object) => {
    const res = await fetch(`${coordinator.url}/v2/models/m/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { res, bytes: Buffer.from(await res.arrayBuffer()) };
  };
  const inputs = [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [0.1, -2.5, 1e-7, 3] }];
  const miss = await send({ id: 'first', inputs });
  assert.equal(miss.res.headers.get('infergrid-cache'), 'miss');
  // a hit is sent from text encoded once per entry: the same text, key for key, with this request's id
  for (const id of ['second', 'third "quoted"']) {
    const hit = await send({ id, inputs });
    assert.equal(hit.res.headers.get('infergrid-cache'), 'hit');
    assert.match(hit.res.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(
      hit.bytes.toString('utf8'),
      miss.bytes
        .toString('utf8')
        .replace('"id":"first"', `"id":${JSON.stringify(id)}`)
        .replace('"infergrid_cache":"miss"', '"infergrid_cache":"hit"'),
    );
  }
  const noId = await send({ inputs });
  assert.equal((JSON.parse(noId.bytes.toString('utf8')) as { id?: string }).id, undefined);
  // the same entry asked for in binary: the tensor's bytes after the JSON header
  const binary = await send({ inputs, parameters: { binary_data_output: true } });
  assert.equal(binary.res.headers.get('infergrid-cache'), 'hit');
  const headerLength = Number(binary.res.headers.get('inference-header-content-length'));
  assert.ok(headerLength > 0);
  const data = new Uint8Array(binary.bytes.subarray(headerLength)); // copied: aligned for the view
  assert.deepEqual(
    [...new Float32Array(data.buffer, data.byteOffset, 4)],
    [...new Float32Array([0.1, -2.5, 1e-7, 3])],
  );
  assert.equal(await executions(coordinator.url), 1, 'the worker ran the model once');
});

test('cache - fifty identical concurrent requests reach a worker once', { timeout: 60_000 }, async (t) => {
  const config = writeConfig(t, MODEL(300));
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  const answers = await Promise.all(Array.from({ length: 50 }, () => infer(coordinator.url, 7)));
  for (const a of answers) {
    assert.equal(a.status, 200);
    assert.deepEqual(a.body.outputs![0]!.data, [7, 7, 7, 7]);
  }
  const outcomes = answers.map((a) => a.cache).sort();
  assert.equal(outcomes.filter((o) => o === 'miss').length, 1, `outcomes ${JSON.stringify(outcomes)}`);
  assert.equal(await executions(coordinator.url), 1, 'exactly one reached the worker');
});

test('cache - a restarted coordinator answers from its SQLite tier, with no worker at all', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, `${MODEL(0)}\ncache: { sqlite: { path: cache.sqlite } }\n`);
  const first = await startCoordinator(t, config);
  await startWorker(t, config, 'w', { coordinator: first.rpcAddress });
  await waitForWorkers(first.url, 1, ['m']);
  assert.equal((await infer(first.url, 3)).cache, 'miss');
  assert.equal(await first.stop(), 0);

  const second = await startCoordinator(t, config);
  const warm = await infer(second.url, 3);
  assert.equal(warm.status, 200, JSON.stringify(warm.body));
  assert.equal(warm.cache, 'hit');
  assert.deepEqual(warm.body.outputs![0]!.data, [3, 3, 3, 3]);
  const cold = await infer(second.url, 4);
  assert.equal(cold.status, 503, 'anything not cached still needs a worker');
});

test('cache - two coordinators share Redis: computed through one, a hit through the other', {
  timeout: 60_000,
}, async (t) => {
  const namespace = `test:${randomUUID()}:`;
  const config = writeConfig(
    t,
    `${MODEL(0)}\ncache: { redis: { url: "redis://127.0.0.1:6379", namespace: "${namespace}" } }\n`,
  );
  const a = await startCoordinator(t, config);
  const b = await startCoordinator(t, config);
  try {
    await startWorker(t, config, 'w', { coordinator: a.rpcAddress });
    await waitForWorkers(a.url, 1, ['m']);
    assert.equal((await infer(a.url, 9)).cache, 'miss');
    const viaB = await infer(b.url, 9);
    assert.equal(viaB.cache, 'hit', 'b has no worker: only the shared cache can answer');
    assert.deepEqual(viaB.body.outputs![0]!.data, [9, 9, 9, 9]);
  } finally {
    // the shared Redis keeps nothing of this test
    await fetch(`${a.url}/admin/cache`, { method: 'DELETE' });
  }
});

test('cache - a store that cannot be opened stops the start, naming it; optional tiers are skipped', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, `${MODEL(0)}\ncache: { sqlite: { path: broken.sqlite } }\n`);
  const path = join(dirname(config), 'broken.sqlite');
  writeFileSync(path, Buffer.alloc(8192, 0x5a));
  await assert.rejects(startCoordinator(t, config), (err: Error) => {
    assert.match(err.message, /cache store sqlite: cannot use .*broken\.sqlite/);
    return true;
  });
  const optional = writeConfig(
    t,
    `${MODEL(0)}\ncache: { sqlite: { path: ${JSON.stringify(path)}, required: false } }\n`,
  );
  const running = await startCoordinator(t, optional);
  await waitFor('the warning', () => running.output().includes('SQLite tier left out'));

  const port = await freePort();
  const unreachable = writeConfig(
    t,
    `${MODEL(0)}\ncache: { redis: { url: "redis://127.0.0.1:${port}", connectTimeoutMs: 500 } }\n`,
  );
  await assert.rejects(
    spawnInfergrid(t, ['coordinator', '--config', unreachable, '--port', '0', '--rpc-port', '0']),
    (err: Error) => {
      assert.match(
        err.message,
        new RegExp(`cache store redis: cannot reach redis://127\\.0\\.0\\.1:${port}`),
      );
      return true;
    },
  );
});

test('cache - a Redis that goes away at run time costs misses, never failed requests', {
  timeout: 60_000,
}, async (t) => {
  const port = await freePort();
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  t.after(() => redis.kill('SIGKILL'));
  const config = writeConfig(
    t,
    `${MODEL(0)}\ncache: { memory: { maxEntries: 1 }, redis: { url: "redis://127.0.0.1:${port}", commandTimeoutMs: 200 } }\n`,
  );
  const coordinator = await waitFor('the coordinator to reach its own Redis', async () => {
    try {
      return await startCoordinator(t, config);
    } catch {
      return undefined;
    }
  });
  await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  assert.equal((await infer(coordinator.url, 1)).cache, 'miss');
  assert.equal((await infer(coordinator.url, 2)).cache, 'miss');
  assert.equal((await infer(coordinator.url, 1)).cache, 'hit', 'from Redis (memory holds one entry)');
  redis.kill('SIGKILL');
  await new Promise((resolve) => redis.once('exit', resolve));
  for (let i = 0; i < 5; i++) {
    const r = await infer(coordinator.url, 10 + i);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.cache, 'miss');
  }
  const admin = (await (await fetch(`${coordinator.url}/admin/cache`)).json()) as {
    tiers: { name: string; errors: number }[];
  };
  assert.ok(admin.tiers.find((tier) => tier.name === 'redis')!.errors > 0, 'the failures were counted');
});

test('cache - a reload with another config never answers from the old model, in any tier, nor after a restart', {
  timeout: 120_000,
}, async (t) => {
  const scale = fileURLToPath(new URL('../fixtures/models/scale.ts', import.meta.url));
  const yaml = (factor: number) => `
models:
  - name: m
    backend: js
    path: ${scale}
    options: { factor: ${factor} }
    cache: { enabled: true, ttlMs: 600000 }
cache: { sqlite: { path: cache.sqlite } }
${fixtureRepositoryYaml({ allowRuntimeJs: true })}`;
  const config = writeConfig(t, yaml(2));
  /** A config beside the first one, sharing its SQLite file. */
  const withFactor = (factor: number): string => {
    const file = join(dirname(config), `factor-${factor}.yaml`);
    writeFileSync(file, yaml(factor));
    return file;
  };
  const serve = async (file: string, worker: string) => {
    const coordinator = await startCoordinator(t, file);
    await startWorker(t, file, worker, { coordinator: coordinator.rpcAddress });
    await waitForWorkers(coordinator.url, 1, ['m']);
    return coordinator;
  };
  const first = await serve(config, 'w1');
  assert.deepEqual((await infer(first.url, 3)).body.outputs![0]!.data, [6, 6, 6, 6]);
  assert.equal((await infer(first.url, 3)).cache, 'hit');

  // the poisoning scenario: reload the model with another config, ask the same question
  const reload = await fetch(`${first.url}/v2/repository/models/m/load`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      parameters: {
        config: { name: 'm', backend: 'js', path: scale, options: { factor: 3 }, cache: { enabled: true } },
      },
    }),
  });
  assert.equal(reload.status, 200, await reload.text());
  const after = await infer(first.url, 3);
  assert.equal(after.cache, 'miss', 'the old answer is in memory and SQLite, but not for this model');
  assert.deepEqual(after.body.outputs![0]!.data, [9, 9, 9, 9]);
  assert.equal((await infer(first.url, 3)).cache, 'hit');
  assert.equal(await first.stop(), 0);

  // a restart with a changed model: SQLite holds the old answers, and none of them is served
  const second = await serve(withFactor(5), 'w2');
  const five = await infer(second.url, 3);
  assert.equal(five.cache, 'miss');
  assert.deepEqual(five.body.outputs![0]!.data, [15, 15, 15, 15]);
  assert.equal(await second.stop(), 0);

  // a restart with the first model: what it computed is still valid, and SQLite answers it
  const third = await serve(withFactor(2), 'w3');
  const two = await infer(third.url, 3);
  assert.equal(two.cache, 'hit');
  assert.deepEqual(two.body.outputs![0]!.data, [6, 6, 6, 6]);
});
