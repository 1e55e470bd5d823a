/**
 * Pipelines, the model repository and version routing with real processes: a pipeline of a js
 * processor on its own pool and a js model elsewhere; load/unload/index at run time; a version
 * policy; a canary split counted over 1,000 requests.
 */

import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
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

const ADD_ONE = fileURLToPath(new URL('../fixtures/models/add-one.ts', import.meta.url));
const DOUBLE = fileURLToPath(new URL('../fixtures/models/double.ts', import.meta.url));

const CONFIG = `
rpc: { heartbeatIntervalMs: 100 }
pools:
  - { name: pre, processes: 1 }
workers:
  - { id: m1 }
models:
  - name: add-one
    backend: js
    path: ${ADD_ONE}
    pool: pre
  - name: double
    backend: js
    path: ${DOUBLE}
    workers: [m1]
  - name: add-then-double
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, shape: [-1, -1] }]
    outputs: [{ name: out, datatype: FP32, shape: [-1, -1] }, { name: plus, datatype: FP32, shape: [-1, -1] }]
    pipeline:
      steps:
        - { name: inc, model: add-one, inputs: { a: $v } }
        - { name: dbl, model: double, inputs: { x: inc.b } }
      outputs: { out: dbl.y, plus: inc.b }
`;

test('pipeline - steps run on their own workers and the result is wired through', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  await startWorker(t, file, 'pre-1', { coordinator: coordinator.rpcAddress });
  await startWorker(t, file, 'm1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['add-one']);
  await waitForWorkers(coordinator.url, 1, ['double']);
  await waitFor('pipeline ready', () => coordinator.client.modelReady('add-then-double'));

  const res = await coordinator.client.infer('add-then-double', [
    { name: 'v', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] },
  ]);
  assert.equal(res.model_name, 'add-then-double');
  const out = Object.fromEntries(res.outputs.map((o) => [o.name, o]));
  assert.deepEqual(out.plus!.data, [2, 3, 4]);
  assert.deepEqual(out.out!.data, [4, 6, 8]);

  const workers = await adminWorkers(coordinator.url);
  const byId = Object.fromEntries(workers.map((w) => [w.id, w]));
  assert.equal(byId['pre-1']!.requests, 1);
  assert.equal(byId.m1!.requests, 1);
  assert.notEqual(byId['pre-1']!.pid, byId.m1!.pid);

  const idx = await post(`${coordinator.url}/v2/repository/index`, '{}');
  console.log(idx.text);
  const un = await post(`${coordinator.url}/v2/repository/models/double/unload`, '{}');
  console.log(un.status, un.text);
  const r2 = await post(
    `${coordinator.url}/v2/models/add-then-double/infer`,
    JSON.stringify({ inputs: [{ name: 'v', datatype: 'FP32', shape: [1, 1], data: [1] }] }),
  );
  console.log(r2.status, r2.text);
  const ld = await post(`${coordinator.url}/v2/repository/models/double/load`, '{}');
  console.log(ld.status, ld.text);
  const r3 = await post(
    `${coordinator.url}/v2/models/add-then-double/infer`,
    JSON.stringify({ inputs: [{ name: 'v', datatype: 'FP32', shape: [1, 1], data: [1] }] }),
  );
  console.log(r3.status, r3.text);
});
