/**
 * `pipeline.runOn: worker` with real processes: the same three steps answer the same as a
 * pipeline the coordinator runs, with one RPC request per pipeline request and no step run on
 * the coordinator; a step model the worker does not host is UNAVAILABLE naming pipeline, step,
 * model and worker (at load and at run time); a worker killed under requests leaves them to
 * the other worker.
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

const M = 'shape: [-1, -1]';
const steps = `
      steps:
        - { name: inc, model: add-one, inputs: { a: $v } }
        - { name: dbl, model: double, inputs: { x: inc.b } }
        - { name: same, model: ident, inputs: { x: dbl.y } }
      outputs: { out: same.y, plus: inc.b }`;
const pipeline = (name: string, runOn: string) => `
  - name: ${name}
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, ${M} }]
    outputs: [{ name: out, datatype: FP32, ${M} }, { name: plus, datatype: FP32, ${M} }]
    pipeline:
      runOn: ${runOn}${steps}`;

const CONFIG = `
rpc: { heartbeatIntervalMs: 100 }
models:
  - { name: add-one, backend: js, path: ${ADD_ONE} }
  - { name: double, backend: js, path: ${DOUBLE} }
  - name: ident
    backend: sim
    sim: { latencyMs: 0 }
    inputs: [{ name: x, datatype: FP32, ${M} }]
    outputs: [{ name: y, datatype: FP32, ${M} }]
${pipeline('chain-c', 'coordinator')}
${pipeline('chain-w', 'worker')}
`;

const infer = (url: string, model: string, data: number[]) =>
  post(
    `${url}/v2/models/${model}/infer`,
    JSON.stringify({ inputs: [{ name: 'v', datatype: 'FP32', shape: [1, data.length], data }] }),
  );

type Outputs = { name: string; data: number[] }[];
const outputsOf = (json: Record<string, unknown>): Record<string, number[]> =>
  Object.fromEntries((json.outputs as Outputs).map((o) => [o.name, o.data]));

async function inferenceCount(url: string, model: string): Promise<number> {
  const res = await fetch(`${url}/v2/models/${model}/stats`);
  const { model_stats } = (await res.json()) as { model_stats: { inference_count: number }[] };
  return model_stats.reduce((n, s) => n + s.inference_count, 0);
}

async function stepRunsOnCoordinator(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('infergrid_pipeline_step_runs_total'));
  assert.ok(line, 'the coordinator exports infergrid_pipeline_step_runs_total');
  return Number(line.split(' ').at(-1));
}

test('pipeline on worker - answers as the coordinator-run pipeline, one RPC request per pipeline request', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['add-one', 'double', 'ident', 'chain-w']);
  await waitFor(
    'both pipelines ready',
    async () => (await coordinator.client.modelReady('chain-w')) && coordinator.client.modelReady('chain-c'),
  );

  const inputs = [[1, 2, 3], [0.5], [-4, 10]];
  const onWorker: Record<string, number[]>[] = [];
  for (const data of inputs) {
    const res = await infer(url, 'chain-w', data);
    assert.equal(res.status, 200, res.text);
    onWorker.push(outputsOf(res.json));
  }
  assert.deepEqual(onWorker[0], { out: [4, 6, 8], plus: [2, 3, 4] });
  // each step model ran once per pipeline request, on the worker; no step ran on the coordinator
  for (const model of ['add-one', 'double', 'ident', 'chain-w'])
    assert.equal(await inferenceCount(url, model), inputs.length, `${model} inference_count`);
  assert.equal(await stepRunsOnCoordinator(url), 0);
  const [w1] = await adminWorkers(url);
  assert.equal(w1!.requests, inputs.length, 'the worker got one RPC request per pipeline request');

  for (const [i, data] of inputs.entries()) {
    const res = await infer(url, 'chain-c', data);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(outputsOf(res.json), onWorker[i], `input ${i}: the same outputs either way`);
  }
  // the coordinator-run one: three RPC requests and three coordinator step runs per request
  assert.equal(await stepRunsOnCoordinator(url), 3 * inputs.length);
  const [after] = await adminWorkers(url);
  assert.equal(after!.requests, inputs.length + 3 * inputs.length);
});

test('pipeline on worker - a step model the worker does not host is UNAVAILABLE naming pipeline, step, model and worker', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;

  // placed by --models without one of its steps: the pipeline fails to load there, saying why
  await startWorker(t, file, 'w-partial', {
    coordinator: coordinator.rpcAddress,
    extraArgs: ['--models', 'add-one,ident,chain-w'],
  });
  await waitFor('the pipeline reported unavailable', async () => {
    const [w] = await adminWorkers(url);
    return w?.models.find((m) => m.name === 'chain-w' && m.state === 'unavailable');
  });
  const atLoad = await infer(url, 'chain-w', [1]);
  assert.equal(atLoad.status, 503, atLoad.text);
  assert.match(
    atLoad.json.error ?? '',
    /pipeline "chain-w" runs on its workers, but worker w-partial does not host model "double" \(step "dbl"\)/,
  );

  // a worker with every step serves it; then a step unloaded under it fails at run time, typed
  await startWorker(t, file, 'w-full', { coordinator: coordinator.rpcAddress });
  await waitFor('the pipeline ready', () => coordinator.client.modelReady('chain-w'));
  const ok = await infer(url, 'chain-w', [1]);
  assert.equal(ok.status, 200, ok.text);
  const unload = await post(`${url}/v2/repository/models/double/unload`, '{}');
  assert.equal(unload.status, 200, unload.text);
  const atRun = await infer(url, 'chain-w', [1]);
  assert.equal(atRun.status, 503, atRun.text);
  assert.equal(atRun.json.code, 'UNAVAILABLE');
  assert.match(
    atRun.json.error ?? '',
    /pipeline "chain-w" step "dbl": model "double" is not ready on worker w-full/,
  );
});

test('pipeline on worker - a worker killed under requests: they are answered by the other worker', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const w1 = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await startWorker(t, file, 'w2', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 2, ['add-one', 'double', 'ident', 'chain-w']);

  for (let i = 0; i < 6; i++) {
    const answer = infer(url, 'chain-w', [i]);
    if (i === 2) w1.child.kill('SIGKILL');
    const res = await answer;
    assert.equal(res.status, 200, `request ${i}: ${res.text}`);
    assert.deepEqual(outputsOf(res.json), { out: [(i + 1) * 2], plus: [i + 1] });
  }
  await w1.exited;
});

test('pipeline on worker - loaded at run time through the repository API, it is hosted by the workers, and again by a restarted worker', {
  timeout: 90_000,
}, async (t) => {
  // the config without the pipelines: only the step models
  const file = writeConfig(t, CONFIG.slice(0, CONFIG.indexOf('\n  - name: chain-c')));
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  const first = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['add-one', 'double', 'ident']);
  const spec = { datatype: 'FP32', shape: [-1, -1] };
  const config = {
    name: 'chain-w',
    backend: 'pipeline',
    inputs: [{ name: 'v', ...spec }],
    outputs: [
      { name: 'out', ...spec },
      { name: 'plus', ...spec },
    ],
    pipeline: {
      runOn: 'worker',
      steps: [
        { name: 'inc', model: 'add-one', inputs: { a: '$v' } },
        { name: 'dbl', model: 'double', inputs: { x: 'inc.b' } },
        { name: 'same', model: 'ident', inputs: { x: 'dbl.y' } },
      ],
      outputs: { out: 'same.y', plus: 'inc.b' },
    },
  };
  const load = await post(
    `${url}/v2/repository/models/chain-w/load`,
    JSON.stringify({ parameters: { config } }),
  );
  assert.equal(load.status, 200, load.text);
  const [w1] = await adminWorkers(url);
  assert.ok(
    w1!.models.some((m) => m.name === 'chain-w' && m.state === 'ready'),
    'the worker hosts the pipeline',
  );
  const res = await infer(url, 'chain-w', [1, 2, 3]);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(outputsOf(res.json), { out: [4, 6, 8], plus: [2, 3, 4] });

  // a restarted worker registers before it has loaded its step models, and the coordinator sends it
  // the pipeline at once: the pipeline's load waits for them instead of failing for good
  first.child.kill('SIGKILL');
  await first.exited;
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitFor('the restarted worker hosting the pipeline, ready', async () => {
    const [w] = await adminWorkers(url);
    const hosted = w?.models.find((m) => m.name === 'chain-w');
    assert.notEqual(hosted?.state, 'unavailable', 'the pipeline failed to load on the restarted worker');
    return hosted?.state === 'ready';
  });
  const again = await infer(url, 'chain-w', [1]);
  assert.equal(again.status, 200, again.text);
  assert.deepEqual(outputsOf(again.json), { out: [4], plus: [2] });
});
