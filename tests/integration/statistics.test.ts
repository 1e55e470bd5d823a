/**
 * Triton's statistics extension against a real coordinator and worker after known traffic:
 * compute_input and compute_output counted (and timed) with every execution; a cached model's
 * first request a cache miss and the next ones cache hits, counted in success but never
 * executed; a pipeline counted end to end like a Triton ensemble (its steps' compute summed),
 * and a failing one in fail; and every figure kept across an unload and load of the version.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const SIM_MS = 5;
const CONFIG = `
rpc: { heartbeatIntervalMs: 100 }
workers: [{ id: ws }]
models:
  - name: s
    backend: sim
    sim: { latencyMs: ${SIM_MS} }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
  - name: four
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [4] }]
    outputs: [{ name: x, datatype: FP32, shape: [4] }]
  - name: cached
    backend: sim
    cache: { enabled: true }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
  - name: pipe
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, shape: [-1] }]
    outputs: [{ name: out, datatype: FP32, shape: [-1] }]
    pipeline:
      steps:
        - { name: one, model: s, inputs: { x: $v } }
        - { name: two, model: s, inputs: { x: one.x } }
      outputs: { out: two.x }
  - name: broken
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, shape: [-1] }]
    outputs: [{ name: out, datatype: FP32, shape: [-1] }]
    pipeline:
      steps:
        - { name: first, model: s, inputs: { x: $v } }
        - { name: narrow, model: four, inputs: { x: first.x } }
      outputs: { out: narrow.x }
`;

interface CountNs {
  count: number;
  ns: number;
}
interface ModelStat {
  name: string;
  version: string;
  last_inference: number;
  inference_count: number;
  execution_count: number;
  inference_stats: Record<
    | 'success'
    | 'fail'
    | 'queue'
    | 'compute_input'
    | 'compute_infer'
    | 'compute_output'
    | 'cache_hit'
    | 'cache_miss',
    CountNs
  >;
  batch_stats: {
    batch_size: number;
    compute_input: CountNs;
    compute_infer: CountNs;
    compute_output: CountNs;
  }[];
}

const body = (data: number[], name = 'x') =>
  JSON.stringify({ inputs: [{ name, datatype: 'FP32', shape: [data.length], data }] });

async function statsOf(url: string, path = '/v2/models/stats'): Promise<Map<string, ModelStat>> {
  const res = await fetch(`${url}${path}`);
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  const { model_stats } = (await res.json()) as { model_stats: ModelStat[] };
  return new Map(model_stats.map((s) => [s.name, s]));
}

/** Each phase counted once per execution here (requests run one by one), batch sizes summing to the executions. */
function assertPhasesCounted(s: ModelStat, executions: number): void {
  assert.equal(s.execution_count, executions, `${s.name} executions`);
  for (const phase of ['compute_input', 'compute_infer', 'compute_output'] as const) {
    assert.equal(s.inference_stats[phase].count, executions, `${s.name} ${phase}.count`);
    assert.equal(
      s.batch_stats.reduce((n, b) => n + b[phase].count, 0),
      executions,
      `${s.name} batch_stats ${phase}: one per execution`,
    );
  }
}

test('statistics - compute phases, cache hits and misses, pipelines end to end, and all of it across a reload', {
  timeout: 90_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const { url } = coordinator;
  await startWorker(t, file, 'ws', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['s', 'four', 'cached']);
  const infer = (model: string, payload: string) => post(`${url}/v2/models/${model}/infer`, payload);

  // one at a time, so every request is its own execution
  for (let i = 0; i < 3; i++) assert.equal((await infer('s', body([i]))).status, 200);
  for (let i = 0; i < 3; i++) assert.equal((await infer('cached', body([7]))).status, 200);
  for (let i = 0; i < 2; i++) assert.equal((await infer('pipe', body([i], 'v'))).status, 200);
  const broken = await infer('broken', body([1], 'v'));
  assert.equal(broken.status, 500, broken.text);
  assert.match(broken.json.error ?? '', /step "narrow"/);

  const before = await statsOf(url);
  assert.deepEqual(
    [...before.keys()].sort(),
    ['broken', 'cached', 'four', 'pipe', 's'],
    'pipelines are listed too',
  );

  // s: its own 3, two steps of each of pipe's 2 requests, and broken's first step
  const s = before.get('s')!;
  const sRuns = 3 + 2 * 2 + 1;
  assertPhasesCounted(s, sRuns);
  assert.equal(s.inference_stats.success.count, sRuns);
  assert.ok(
    s.inference_stats.compute_infer.ns >= sRuns * SIM_MS * 1e6,
    'the model ran its latency each time',
  );
  assert.ok(s.inference_stats.compute_output.ns > 0, 'extracting outputs takes time');
  assert.deepEqual(s.inference_stats.cache_hit, { count: 0, ns: 0 }, 'a model without a cache has no hits');
  assert.deepEqual(s.inference_stats.cache_miss, { count: 0, ns: 0 });

  // cached: one miss that ran on the worker, then two hits that did not
  const c = before.get('cached')!;
  assert.equal(c.inference_stats.cache_miss.count, 1);
  assert.equal(c.inference_stats.cache_hit.count, 2);
  assert.ok(c.inference_stats.cache_hit.ns > 0 && c.inference_stats.cache_miss.ns > 0, 'lookups are timed');
  assert.equal(c.inference_stats.success.count, 3, 'hits count in success');
  assert.equal(c.inference_stats.queue.count, 3, 'and in queue');
  assert.equal(c.inference_count, 1, 'hits are not inferences');
  assertPhasesCounted(c, 1);

  // pipe: like a Triton ensemble, one execution per request, its steps' time summed
  const p = before.get('pipe')!;
  assert.equal(p.inference_stats.success.count, 2);
  assert.equal(p.inference_stats.fail.count, 0);
  assert.equal(p.inference_count, 2);
  assertPhasesCounted(p, 2);
  assert.deepEqual(
    p.batch_stats.map((b) => [b.batch_size, b.compute_infer.count]),
    [[1, 2]],
  );
  assert.ok(p.inference_stats.compute_infer.ns >= 2 * 2 * SIM_MS * 1e6, 'both steps of both requests');
  assert.ok(
    p.inference_stats.success.ns >= p.inference_stats.compute_infer.ns,
    'end to end covers the steps',
  );
  assert.equal(p.inference_stats.queue.count, 2);
  assert.ok(p.last_inference > 0);
  const pOnly = await statsOf(url, '/v2/models/pipe/stats');
  assert.deepEqual([...pOnly.keys()], ['pipe']);
  assert.equal(pOnly.get('pipe')!.inference_stats.success.count, 2);

  const b = before.get('broken')!;
  assert.equal(b.inference_stats.fail.count, 1);
  assert.equal(b.inference_stats.success.count, 0);
  assert.equal(b.execution_count, 0, 'a failed pipeline request is not an execution');

  // unload and load the same version: the figures go on from where they were
  for (const model of ['s', 'cached']) {
    const unloaded = await post(`${url}/v2/repository/models/${model}/unload`, '{}');
    assert.equal(unloaded.status, 200, unloaded.text);
    const loaded = await post(`${url}/v2/repository/models/${model}/load`, '{}');
    assert.equal(loaded.status, 200, loaded.text);
  }
  await waitFor('s and cached to serve again', async () => {
    const [a, z] = await Promise.all([
      fetch(`${url}/v2/models/s/ready`),
      fetch(`${url}/v2/models/cached/ready`),
    ]);
    return a.status === 200 && z.status === 200;
  });
  assert.equal((await infer('s', body([9]))).status, 200);
  assert.equal((await infer('cached', body([7]))).status, 200);

  const after = await statsOf(url);
  assertPhasesCounted(after.get('s')!, sRuns + 1);
  assert.equal(after.get('s')!.inference_stats.success.count, sRuns + 1);
  const c2 = after.get('cached')!;
  // the same config loaded again makes the same answers: the entry stored before still serves
  assert.equal(c2.inference_stats.cache_hit.count, 3, 'the hits before the reload are still counted');
  assert.equal(c2.inference_stats.cache_miss.count, 1);
  assert.equal(c2.inference_stats.success.count, 4);
  assertPhasesCounted(c2, 1);
});
