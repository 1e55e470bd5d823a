/**
 * The model repository, version policies and the canary split with real coordinator and worker
 * processes on loopback: unload/load and what every endpoint says meanwhile, models defined at
 * run time, a restarted worker brought in line with what operators asked, versions a policy
 * serves, a traffic split counted over 1,000 requests, and pipeline step errors.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  fixtureRepositoryYaml,
  writeConfig,
} from '../fixtures/processes.ts';

const SLOW_LOAD = fileURLToPath(new URL('../fixtures/models/slow-load.ts', import.meta.url));
const DOUBLE = fileURLToPath(new URL('../fixtures/models/double.ts', import.meta.url));
const TOGGLE = fileURLToPath(new URL('../fixtures/models/toggle-failure.ts', import.meta.url));

/** A sim model's schema (x -> y, FP32 vectors), as YAML and as JSON. */
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

/** A fresh folder for a test's files, removed after it. */
function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-repository-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function inferBody(data: number[], parameters?: Record<string, string | number>): string {
  return JSON.stringify({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [data.length], data }],
    ...(parameters ? { parameters } : {}),
  });
}

function infer(url: string, model: string, data: number[], version?: string) {
  const path = version === undefined ? model : `${model}/versions/${version}`;
  return post(`${url}/v2/models/${path}/infer`, inferBody(data));
}

async function index(url: string, body = '{}'): Promise<IndexEntry[]> {
  const res = await post(`${url}/v2/repository/index`, body);
  assert.equal(res.status, 200, res.text);
  return JSON.parse(res.text) as IndexEntry[];
}

/** The index entries of one model, as `version:STATE(reason)` strings. */
async function stateOf(url: string, model: string): Promise<string[]> {
  return (await index(url))
    .filter((e) => e.name === model)
    .map((e) => `${e.version}:${e.state}${e.reason ? `(${e.reason})` : ''}`);
}

function repository(url: string, model: string, action: 'load' | 'unload', body = '{}') {
  return post(`${url}/v2/repository/models/${model}/${action}`, body);
}

async function get(url: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function put(url: string, body: string) {
  const res = await fetch(url, { method: 'PUT', body, headers: { 'content-type': 'application/json' } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * Sends `count` requests, `concurrency` at a time, and counts the model_version of the answers;
 * fails on any answer that is not a 200.
 */
async function countVersions(
  url: string,
  count: number,
  concurrency: number,
  body: (i: number) => string,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const failures: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const res = await post(`${url}/v2/models/c/infer`, body(i));
        if (res.status !== 200) failures.push(`${res.status} ${res.text}`);
        else {
          const v = String(res.json.model_version);
          counts[v] = (counts[v] ?? 0) + 1;
        }
      }
    }),
  );
  assert.deepEqual(failures, [], 'every request is answered');
  return counts;
}

test('repository - unload and load: index, inference and readiness say so; a loading model is not ready', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  const readyFile = join(dir, 'slow-ready');
  const logFile = join(dir, 'slow-log');
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
models:
  - name: m${SIM_YAML}
  - name: slow
    backend: js
    path: ${SLOW_LOAD}
    options: { readyFile: ${JSON.stringify(readyFile)}, logFile: ${JSON.stringify(logFile)} }
`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });

  // the worker holds `slow` in its load until the file exists: meanwhile it is not ready
  await waitFor('slow to be loading', async () => (await stateOf(url, 'slow')).join() === '1:LOADING');
  assert.equal(existsSync(readyFile), false);
  let ready = await get(`${url}/v2/models/slow/ready`);
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.json, { name: 'slow', version: '1', ready: false });
  assert.equal((await get(`${url}/v2/health/ready`)).status, 503, 'the server waits for every model');
  writeFileSync(readyFile, '');
  await waitForWorkers(url, 1, ['m', 'slow']);
  assert.deepEqual(
    (await index(url)).map((e) => `${e.name}:${e.state}`),
    ['m:READY', 'slow:READY'],
    'the index lists every model with its state',
  );
  assert.equal((await get(`${url}/v2/health/ready`)).status, 200);

  // unload m: the index says so, inference is a 404 that says how to load it, not ready
  const unloaded = await repository(url, 'm', 'unload');
  assert.equal(unloaded.status, 200, unloaded.text);
  assert.deepEqual(unloaded.json.models, [
    { name: 'm', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' },
  ]);
  assert.deepEqual(await stateOf(url, 'm'), ['1:UNAVAILABLE(unloaded)']);
  assert.deepEqual(
    (await index(url, '{"ready": true}')).map((e) => e.name),
    ['slow'],
    '{"ready": true} lists only ready models',
  );
  const refused = await infer(url, 'm', [1]);
  assert.equal(refused.status, 404, refused.text);
  assert.equal(refused.json.code, 'MODEL_NOT_FOUND');
  assert.match(String(refused.json.error), /model "m" is unloaded; POST \/v2\/repository\/models\/m\/load/);
  assert.notEqual((await get(`${url}/v2/models/m/ready`)).status, 200);
  assert.equal(
    (await get(`${url}/v2/health/ready`)).status,
    200,
    'a model an operator unloaded does not make the server unready',
  );
  const worker = (await adminWorkers(url)).find((w) => w.id === 'w1')!;
  assert.deepEqual(
    worker.models.map((m) => m.name),
    ['slow'],
    'the worker let go of m',
  );

  // load m again: ready, and inference works
  const loaded = await repository(url, 'm', 'load');
  assert.equal(loaded.status, 200, loaded.text);
  assert.deepEqual(loaded.json.models, [{ name: 'm', version: '1', state: 'READY', reason: '' }]);
  assert.equal((await get(`${url}/v2/models/m/ready`)).status, 200);
  const answer = await infer(url, 'm', [1, 2]);
  assert.equal(answer.status, 200, answer.text);
  assert.deepEqual((answer.json.outputs as { data: number[] }[])[0]!.data, [1, 2]);

  // reload `slow` while its file is missing: it reports LOADING and not ready until the file appears
  rmSync(readyFile);
  assert.equal((await repository(url, 'slow', 'unload')).status, 200);
  let settled = false;
  const reloading = repository(url, 'slow', 'load').finally(() => {
    settled = true;
  });
  await waitFor('slow to be loading again', async () => (await stateOf(url, 'slow')).join() === '1:LOADING');
  ready = await get(`${url}/v2/models/slow/ready`);
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.json, { name: 'slow', version: '1', ready: false });
  const early = await infer(url, 'slow', [1]);
  assert.equal(early.status, 503, `a request for a loading model: ${early.text}`);
  assert.equal(settled, false, 'the load is answered only once the model is loaded');
  writeFileSync(readyFile, '');
  const reloaded = await reloading;
  assert.equal(reloaded.status, 200, reloaded.text);
  assert.deepEqual(reloaded.json.models, [{ name: 'slow', version: '1', state: 'READY', reason: '' }]);
  assert.equal((await get(`${url}/v2/models/slow/ready`)).status, 200);
  assert.equal((await infer(url, 'slow', [3])).status, 200);
  const log = readFileSync(logFile, 'utf8').trim().split('\n');
  assert.deepEqual(
    log.map((l) => l.split(' ')[0]),
    ['load', 'dispose', 'load'],
    'one load, the unload disposed it, one reload',
  );
});

test('repository - a model defined at run time with parameters.config serves; bad configs are refused', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(
    t,
    `rpc: { heartbeatIntervalMs: 100 }\nmodels:\n  - name: m${SIM_YAML}\n${fixtureRepositoryYaml({ allowRuntimeJs: true })}`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const w1 = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['m']);

  // a sim model as an object
  const fresh = await repository(
    url,
    'fresh',
    'load',
    JSON.stringify({ parameters: { config: { name: 'fresh', ...SIM_JSON } } }),
  );
  assert.equal(fresh.status, 200, fresh.text);
  assert.deepEqual(fresh.json.models, [{ name: 'fresh', version: '1', state: 'READY', reason: '' }]);
  const echoed = await infer(url, 'fresh', [4, 5]);
  assert.equal(echoed.status, 200, echoed.text);
  assert.deepEqual((echoed.json.outputs as { data: number[] }[])[0]!.data, [4, 5]);

  // a js model as a JSON string
  const config = JSON.stringify({ name: 'twice', backend: 'js', path: DOUBLE });
  const twice = await repository(url, 'twice', 'load', JSON.stringify({ parameters: { config } }));
  assert.equal(twice.status, 200, twice.text);
  const doubled = await post(
    `${url}/v2/models/twice/infer`,
    JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], data: [1, 2] }] }),
  );
  assert.equal(doubled.status, 200, doubled.text);
  assert.deepEqual((doubled.json.outputs as { data: number[] }[])[0]!.data, [2, 4]);
  assert.deepEqual(
    (await index(url)).map((e) => `${e.name}:${e.state}`),
    ['fresh:READY', 'm:READY', 'twice:READY'],
  );
  const described = await get(`${url}/v2/models/fresh/config?format=infergrid`);
  assert.equal(described.status, 200);
  assert.equal(described.json.backend, 'sim');
  assert.deepEqual(described.json.replicas, [{ worker: 'w1', pool: null, state: 'ready' }]);

  // configs with an error: 400 naming the field
  const badField = await repository(
    url,
    'bad',
    'load',
    JSON.stringify({ parameters: { config: { name: 'bad', ...SIM_JSON, maxBatchSize: -1 } } }),
  );
  assert.equal(badField.status, 400, badField.text);
  assert.equal(badField.json.code, 'INVALID_ARGUMENT');
  assert.match(String(badField.json.error), /maxBatchSize/);
  const unknownField = await repository(
    url,
    'bad',
    'load',
    JSON.stringify({ parameters: { config: { name: 'bad', ...SIM_JSON, batchSize: 4 } } }),
  );
  assert.equal(unknownField.status, 400, unknownField.text);
  assert.match(String(unknownField.json.error), /batchSize/);
  const noPath = await repository(
    url,
    'bad',
    'load',
    JSON.stringify({ parameters: { config: { name: 'bad', backend: 'js' } } }),
  );
  assert.equal(noPath.status, 400, noPath.text);
  assert.match(String(noPath.json.error), /config\.path: required for backend "js"/);
  const otherName = await repository(
    url,
    'bad',
    'load',
    JSON.stringify({ parameters: { config: { name: 'fresh', ...SIM_JSON } } }),
  );
  assert.equal(otherName.status, 400, otherName.text);
  assert.match(String(otherName.json.error), /names model "fresh" but the URL loads "bad"/);
  const notJson = await repository(url, 'bad', 'load', JSON.stringify({ parameters: { config: '{nope' } }));
  assert.equal(notJson.status, 400, notJson.text);
  assert.match(String(notJson.json.error), /parameters\.config is not valid JSON/);
  const notObject = await repository(url, 'bad', 'load', '[1]');
  assert.equal(notObject.status, 400, notObject.text);

  // a config naming a file inside a root that does not exist: the load fails naming the file
  const missing = join(dirname(DOUBLE), 'no-such-model.ts');
  const ghost = await repository(
    url,
    'ghost',
    'load',
    JSON.stringify({ parameters: { config: { name: 'ghost', backend: 'js', path: missing } } }),
  );
  assert.equal(ghost.status, 500, ghost.text);
  assert.equal(ghost.json.code, 'MODEL_LOAD_FAILED');
  assert.ok(String(ghost.json.error).includes(missing), ghost.text);
  assert.match(String(ghost.json.error), /w1/, 'names the worker that failed');
  // a new model that loaded nowhere is forgotten: not left declared, never-ready, in the index
  assert.ok(!(await index(url)).some((e) => e.name === 'ghost'), 'ghost is not in the index');
  assert.equal((await infer(url, 'ghost', [1])).status, 404);
  assert.equal((await get(`${url}/v2/health/ready`)).status, 200, 'the server is ready without it');

  // an unknown model without a config: 404
  const unknown = await repository(url, 'nobody', 'load');
  assert.equal(unknown.status, 404, unknown.text);
  assert.equal(unknown.json.code, 'MODEL_NOT_FOUND');
  assert.match(String(unknown.json.error), /send its config as parameters\.config/);
  const unknownUnload = await repository(url, 'nobody', 'unload');
  assert.equal(unknownUnload.status, 404, unknownUnload.text);

  // none of it disturbed what was served, and nothing restarted
  assert.equal((await infer(url, 'm', [1])).status, 200);
  assert.equal((await infer(url, 'fresh', [1])).status, 200);
  assert.equal(w1.child.exitCode, null);
  assert.equal((await adminWorkers(url)).find((w) => w.id === 'w1')!.pid, w1.child.pid);
});

test('repository - a restarted worker does not bring back an unloaded model and gets models loaded at run time', {
  timeout: 60_000,
}, async (t) => {
  const dir = tempDir(t);
  const gateFile = join(dir, 'gate-ready');
  writeFileSync(gateFile, '');
  // the worker loads its config's models in order: k only after `gate`, which waits for its file
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
models:
  - name: m${SIM_YAML}
  - name: gate
    backend: js
    path: ${SLOW_LOAD}
    options: { readyFile: ${JSON.stringify(gateFile)} }
  - name: k${SIM_YAML}
`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const first = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['m', 'gate', 'k']);

  const unloaded = await repository(url, 'k', 'unload');
  assert.equal(unloaded.status, 200, unloaded.text);
  const fresh = await repository(
    url,
    'fresh',
    'load',
    JSON.stringify({ parameters: { config: { name: 'fresh', ...SIM_JSON } } }),
  );
  assert.equal(fresh.status, 200, fresh.text);

  // the worker dies; a new process takes its id. Its own config still lists k, which it will
  // load once `gate` has loaded, well after it joined; it knows nothing of `fresh`
  rmSync(gateFile);
  first.child.kill('SIGKILL');
  await first.exited;
  await waitFor('the coordinator to see w1 leave', async () => (await adminWorkers(url)).length === 0);
  const second = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  const reported: { name: string; state: string }[][] = [];
  second.child.on('message', (message: { type?: string; models?: { name: string; state: string }[] }) => {
    if (message?.type === 'models') reported.push(message.models ?? []);
  });
  await waitForWorkers(url, 1, ['m', 'fresh']);
  const w1 = (await adminWorkers(url)).find((w) => w.id === 'w1')!;
  assert.equal(w1.pid, second.child.pid, 'the new process');
  assert.deepEqual(await stateOf(url, 'gate'), ['1:LOADING']);
  assert.deepEqual(await stateOf(url, 'k'), ['1:UNAVAILABLE(unloaded)'], 'k has not started loading yet');

  // let `gate` finish: the worker then loads k by itself, and the coordinator has it unloaded
  writeFileSync(gateFile, '');
  await waitFor(
    'the restarted worker to load k and let go of it',
    async () => {
      const loadedK = reported.some((list) => list.some((m) => m.name === 'k'));
      const latest = reported.at(-1) ?? [];
      return (
        loadedK &&
        !latest.some((m) => m.name === 'k') &&
        (await stateOf(url, 'k')).join() === '1:UNAVAILABLE(unloaded)'
      );
    },
    10_000,
  );
  const k = await infer(url, 'k', [1]);
  assert.equal(k.status, 404, k.text);
  assert.match(String(k.json.error), /unloaded/);
  const answer = await infer(url, 'fresh', [7]);
  assert.equal(answer.status, 200, answer.text);
  assert.deepEqual(
    (await index(url)).map((e) => `${e.name}:${e.state}`),
    ['fresh:READY', 'gate:READY', 'k:UNAVAILABLE', 'm:READY'],
  );
  assert.deepEqual(
    (reported.at(-1) ?? []).map((m) => `${m.name}:${m.state}`).sort(),
    ['fresh:ready', 'gate:ready', 'm:ready'],
    'what the worker itself says it hosts',
  );
});

test('repository - version policy: only the versions it names are loaded and served', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
models:
  - name: v
    version: 1${SIM_YAML}
    versionPolicy: { latest: 1 }
  - name: v
    version: 2${SIM_YAML}
  - name: s
    version: 1${SIM_YAML}
    versionPolicy: { specific: [1] }
  - name: s
    version: 2${SIM_YAML}
`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const first = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['v', 's']);
  const hosted = (await adminWorkers(url))[0]!.models.map((m) => `${m.name}@${m.version}`).sort();
  assert.deepEqual(hosted, ['s@1', 'v@2'], 'the worker loads only the served versions');

  // latest 1: version 2 serves; version 1 is a 404 that names the policy
  assert.equal((await infer(url, 'v', [1])).json.model_version, '2');
  assert.equal((await infer(url, 'v', [1], '2')).json.model_version, '2');
  const old = await infer(url, 'v', [1], '1');
  assert.equal(old.status, 404, old.text);
  assert.equal(old.json.code, 'MODEL_NOT_FOUND');
  assert.match(String(old.json.error), /version "1" is not served: its version policy serves the latest 1/);
  assert.deepEqual(await stateOf(url, 'v'), [
    '2:READY',
    '1:UNAVAILABLE(not served: the version policy serves the latest 1)',
  ]);

  // specific [1]: version 1 serves although 2 is newer
  assert.equal((await infer(url, 's', [1])).json.model_version, '1');
  const newer = await infer(url, 's', [1], '2');
  assert.equal(newer.status, 404, newer.text);
  assert.match(String(newer.json.error), /its version policy serves versions 1/);
  const config = await get(`${url}/v2/models/s/config?format=infergrid`);
  assert.deepEqual(config.json.version_policy, { specific: ['1'] });
  assert.deepEqual(config.json.versions, ['1']);

  // a version 3 loaded at run time under latest 1 takes over, and the worker lets go of 2
  const v3 = await repository(
    url,
    'v',
    'load',
    JSON.stringify({ parameters: { config: { name: 'v', version: 3, ...SIM_JSON } } }),
  );
  assert.equal(v3.status, 200, v3.text);
  assert.deepEqual(
    (v3.json.models as IndexEntry[]).map((e) => `${e.version}:${e.state}`),
    ['3:READY', '2:UNAVAILABLE', '1:UNAVAILABLE'],
  );
  assert.equal((await infer(url, 'v', [1])).json.model_version, '3');
  const two = await infer(url, 'v', [1], '2');
  assert.equal(two.status, 404, two.text);
  assert.match(String(two.json.error), /the latest 1/);
  const after = (await adminWorkers(url))[0]!.models.map((m) => `${m.name}@${m.version}`).sort();
  assert.deepEqual(after, ['s@1', 'v@3']);

  // a restarted worker loads version 2 from its own config: the coordinator swaps it for 3
  first.child.kill('SIGKILL');
  await first.exited;
  await waitFor('the coordinator to see w1 leave', async () => (await adminWorkers(url)).length === 0);
  const second = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  const reported: string[][] = [];
  second.child.on('message', (message: { type?: string; models?: { name: string; version: string }[] }) => {
    if (message?.type === 'models')
      reported.push((message.models ?? []).map((m) => `${m.name}@${m.version}`));
  });
  await waitFor(
    'the restarted worker to host exactly s@1 and v@3',
    async () =>
      (await stateOf(url, 'v')).join() ===
        '3:READY,2:UNAVAILABLE(not served: the version policy serves the latest 1),1:UNAVAILABLE(not served: the version policy serves the latest 1)' &&
      (reported.at(-1) ?? []).sort().join() === 's@1,v@3',
    10_000,
  );
  assert.ok(
    reported.some((list) => list.includes('v@2')),
    'the restarted worker did load version 2 from its config',
  );
  assert.equal((await infer(url, 'v', [1], '2')).status, 404);
  assert.equal((await infer(url, 'v', [1])).json.model_version, '3');
});

test('repository - canary: a 90/10 split over 1,000 requests, versioned requests, PUT traffic, shard keys', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
logging: { level: warn }
models:
  - name: c
    version: 1${SIM_YAML}
    traffic: 90
  - name: c
    version: 2${SIM_YAML}
    traffic: 10
`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitFor('both versions ready', async () => (await stateOf(url, 'c')).join() === '2:READY,1:READY');
  const body = inferBody([1]);

  // Each unversioned request goes to v2 with p = 0.1 on its own, so over n = 1,000 the count
  // of v2 is Binomial(1000, 0.1): mean 100, sd sqrt(1000 * 0.1 * 0.9) = 9.49. Four sd either
  // side, [62, 138] (6.2% .. 13.8%), fails a correct router about once in 16,000 runs, while a
  // router that ignored the split (0 or 1,000) or inverted it (900) fails every time.
  const split = await countVersions(url, 1000, 16, () => body);
  t.diagnostic(`90/10 split over 1,000 requests: ${JSON.stringify(split)}`);
  assert.equal((split['1'] ?? 0) + (split['2'] ?? 0), 1000);
  assert.ok(split['2']! >= 62 && split['2']! <= 138, `v2 got ${split['2']} of 1,000 (expected 100 ± 38)`);

  // a request naming its version always gets it
  for (const v of ['1', '2']) {
    let n = 0;
    for (let i = 0; i < 50; i++) {
      const res = await infer(url, 'c', [1], v);
      assert.equal(res.status, 200, res.text);
      if (res.json.model_version === v) n++;
    }
    assert.equal(n, 50, `all 50 requests for version ${v} were answered by it`);
  }

  // the operator moves to 50/50: Binomial(1000, 0.5), sd 15.8, four sd: [437, 563] (again
  // about once in 17,000 runs for a correct router)
  const moved = await put(`${url}/admin/models/c/traffic`, '{"1": 50, "2": 50}');
  assert.equal(moved.status, 200, JSON.stringify(moved.json));
  assert.deepEqual(moved.json.traffic, { '1': 50, '2': 50 });
  assert.deepEqual((await get(`${url}/admin/models/c/traffic`)).json.traffic, { '1': 50, '2': 50 });
  const even = await countVersions(url, 1000, 16, () => body);
  t.diagnostic(`50/50 split over 1,000 requests: ${JSON.stringify(even)}`);
  assert.ok(even['2']! >= 437 && even['2']! <= 563, `v2 got ${even['2']} of 1,000 (expected 500 ± 63)`);

  // bad splits are refused and change nothing
  const bad: [string, number, RegExp][] = [
    ['{"1": 50, "3": 50}', 400, /no served version "3"/],
    ['{"1": -10, "2": 110}', 400, /share of version "1" must be a number from 0 to 100, got -10/],
    ['{"1": 0, "2": 0}', 400, /at least one version needs a share above 0/],
    ['{"1": "50"}', 400, /must be a number/],
    ['[50, 50]', 400, /expected a JSON object of version -> share/],
    ['{"1": 50', 400, /not valid JSON/],
  ];
  for (const [text, status, message] of bad) {
    const res = await put(`${url}/admin/models/c/traffic`, text);
    assert.equal(res.status, status, `${text}: ${JSON.stringify(res.json)}`);
    assert.match(String(res.json.error), message, text);
  }
  assert.equal((await put(`${url}/admin/models/nope/traffic`, '{"1": 100}')).status, 404);
  assert.deepEqual((await get(`${url}/admin/models/c/traffic`)).json.traffic, { '1': 50, '2': 50 });

  // the same shard key always gets the same version; 40 keys reach both versions
  const byKey = new Map<string, Set<string>>();
  for (let key = 0; key < 40; key++) {
    const versions = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const res = await post(`${url}/v2/models/c/infer`, inferBody([1], { shard_key: `user-${key}` }));
      assert.equal(res.status, 200, res.text);
      versions.add(String(res.json.model_version));
    }
    byKey.set(`user-${key}`, versions);
  }
  const split40 = [...byKey.values()].map((s) => [...s].join('+'));
  assert.ok(
    split40.every((v) => v === '1' || v === '2'),
    `each key kept one version: ${split40}`,
  );
  assert.deepEqual(new Set(split40), new Set(['1', '2']), 'the keys spread over both versions');

  // {} clears the split: the newest version takes every unversioned request
  assert.equal((await put(`${url}/admin/models/c/traffic`, '{}')).status, 200);
  assert.deepEqual(await countVersions(url, 50, 8, () => body), { '2': 50 });
});

test('repository - pipeline step errors: an unloaded step is 503 naming it; a step refusing input is 400 and nothing breaks', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
models:
  - name: check
    backend: js
    path: ${TOGGLE}
  - name: echo${SIM_YAML}
  - name: p
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, shape: [-1] }]
    outputs: [{ name: out, datatype: FP32, shape: [-1] }]
    pipeline:
      steps:
        - { name: guard, model: check, inputs: { x: $v } }
        - { name: post, model: echo, inputs: { x: guard.y } }
      outputs: { out: post.y }
`,
  );
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const w1 = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['check', 'echo']);
  await waitFor(
    'the pipeline to be ready',
    async () => (await get(`${url}/v2/models/p/ready`)).status === 200,
  );
  const run = (data: number[]) =>
    post(
      `${url}/v2/models/p/infer`,
      JSON.stringify({ inputs: [{ name: 'v', datatype: 'FP32', shape: [data.length], data }] }),
    );
  const ok = await run([1, 2]);
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual((ok.json.outputs as { data: number[] }[])[0]!.data, [1, 2]);

  // the guard step refuses a negative value: the client's 400, naming the step
  const refused = await run([-1, 2]);
  assert.equal(refused.status, 400, refused.text);
  assert.equal(refused.json.code, 'INVALID_ARGUMENT');
  assert.match(String(refused.json.error), /step "guard" \(check\): .*x must not be negative/);
  const next = await run([3]);
  assert.equal(next.status, 200, `the worker still serves the next request: ${next.text}`);
  assert.deepEqual((next.json.outputs as { data: number[] }[])[0]!.data, [3]);
  const worker = (await adminWorkers(url)).find((w) => w.id === 'w1')!;
  assert.equal(worker.pid, w1.child.pid, 'the same worker process');
  assert.equal(w1.child.exitCode, null);
  assert.equal(worker.failures, 0, "a client's bad input is not the worker's failure");
  assert.equal(worker.requests, 5, 'one request per step run: 2, then 1 (refused at the guard), then 2');

  // unload the second step's model: the pipeline is 503 naming the step, and not ready
  assert.equal((await repository(url, 'echo', 'unload')).status, 200);
  const unavailable = await run([1]);
  assert.equal(unavailable.status, 503, unavailable.text);
  assert.equal(unavailable.json.code, 'UNAVAILABLE');
  assert.match(String(unavailable.json.error), /pipeline "p" step "post": model "echo" is unloaded/);
  assert.equal((await get(`${url}/v2/models/p/ready`)).status, 503);
  assert.deepEqual(await stateOf(url, 'p'), ['1:UNAVAILABLE(a step model has no ready replica)']);

  // and back
  assert.equal((await repository(url, 'echo', 'load')).status, 200);
  assert.equal((await get(`${url}/v2/models/p/ready`)).status, 200);
  const again = await run([5]);
  assert.equal(again.status, 200, again.text);
  assert.deepEqual((again.json.outputs as { data: number[] }[])[0]!.data, [5]);
});
