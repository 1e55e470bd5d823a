/**
 * Prometheus metrics after known traffic, read back through a real exposition-format parser:
 * the coordinator's request counters by outcome, the worker's counts (with a `worker` label on
 * the coordinator's page, and on the worker's own /metrics port), inference count against
 * execution count and the executed batch sizes, histogram counts, and cache hits and misses.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type PromSample, parseExposition, referenceParserMissing } from '../fixtures/prometheus.ts';
import { post, startCoordinator, startWorker, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

const CONFIG = `
rpc: { heartbeatIntervalMs: 100 }
workers: [{ id: wm }]
models:
  - name: s
    backend: sim
    sim: { latencyMs: 20 }
    maxBatchSize: 8
    batching: { enabled: true, maxQueueDelayMs: 50 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
  - name: slow
    backend: sim
    sim: { latencyMs: 200 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
  - name: cached
    backend: sim
    cache: { enabled: true }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
`;

async function scrape(url: string): Promise<PromSample[]> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const samples = parseExposition(await res.text());
  assert.ok(samples.length > 50, 'the page parses into many samples');
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
function series(samples: PromSample[], name: string, labels: Record<string, string>): PromSample[] {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

/** The value of the one sample named `name` whose labels include `labels`. */
function value(samples: PromSample[], name: string, labels: Record<string, string> = {}): number {
  const matches = series(samples, name, labels);
  assert.equal(
    matches.length,
    1,
    `one ${name} sample with ${JSON.stringify(labels)}: ${JSON.stringify(matches)}`,
  );
  return matches[0]!.value;
}

const body = (data: number[]) =>
  JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [data.length], data }] });

test('metrics - counters by value after known traffic, parsed as Prometheus exposition', {
  timeout: 60_000,
}, async (t) => {
  const missing = referenceParserMissing();
  if (missing) {
    t.skip(`the reference exposition parser cannot run: ${missing}`);
    return;
  }
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const worker = await startWorker(t, file, 'wm', {
    coordinator: coordinator.rpcAddress,
    extraArgs: ['--metrics-port', '0'],
  });
  await waitForWorkers(coordinator.url, 1, ['s', 'slow', 'cached']);
  const infer = (model: string, payload: string) =>
    post(`${coordinator.url}/v2/models/${model}/infer`, payload);

  // 10 requests at once (batched), 2 refused for a wrong datatype, 1 for an unknown model
  const ok = await Promise.all(Array.from({ length: 10 }, (_, i) => infer('s', body([i]))));
  assert.deepEqual(
    ok.map((r) => r.status),
    Array(10).fill(200),
  );
  const bad = JSON.stringify({ inputs: [{ name: 'x', datatype: 'INT32', shape: [1], data: [1] }] });
  assert.equal((await infer('s', bad)).status, 400);
  assert.equal((await infer('s', bad)).status, 400);
  assert.equal((await infer('nope', body([1]))).status, 404);
  // refused before it resolved a version: a body that is JSON but not an inference request
  assert.equal((await infer('s', JSON.stringify({ inputs: 'x' }))).status, 400);
  // one out of time: the model takes 200 ms, the request allows 1
  const late = JSON.stringify({
    parameters: { timeout_ms: 1 },
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }],
  });
  assert.equal((await infer('slow', late)).status, 504);
  // the same request three times to a cached model: one miss, then two hits
  for (let i = 0; i < 3; i++) assert.equal((await infer('cached', body([7]))).status, 200);

  const m = await scrape(`${coordinator.url}/metrics`);
  assert.equal(value(m, 'infergrid_requests_total', { model: 's', code: 'OK' }), 10);
  assert.equal(
    value(m, 'infergrid_requests_total', { model: 's', version: '1', code: 'INVALID_ARGUMENT' }),
    2,
  );
  // the malformed one counts under the model it named (as the dashboard counts it), with no version
  assert.equal(
    value(m, 'infergrid_requests_total', { model: 's', version: '', code: 'INVALID_ARGUMENT' }),
    1,
  );
  assert.equal(value(m, 'infergrid_requests_total', { code: 'MODEL_NOT_FOUND' }), 1);
  assert.equal(value(m, 'infergrid_requests_total', { model: 'slow', code: 'DEADLINE_EXCEEDED' }), 1);
  assert.equal(
    value(m, 'infergrid_request_duration_seconds_count', { model: 's' }),
    10,
    'one observation per success',
  );
  assert.equal(value(m, 'infergrid_cache_misses_total', { model: 'cached' }), 1);
  assert.equal(value(m, 'infergrid_cache_hits_total', { model: 'cached' }), 2);
  assert.equal(value(m, 'infergrid_worker_healthy', { worker: 'wm' }), 1);
  assert.equal(value(m, 'infergrid_worker_metrics_up', { worker: 'wm' }), 1);
  assert.equal(value(m, 'infergrid_model_ready_replicas', { model: 's' }), 1);

  // the worker's figures, labelled with the worker on the coordinator's page
  const w = { model: 's', worker: 'wm' };
  assert.equal(value(m, 'infergrid_inference_request_success_total', w), 10);
  const inferences = value(m, 'infergrid_inference_count_total', w);
  const executions = value(m, 'infergrid_inference_exec_count_total', w);
  assert.equal(inferences, 10, 'every row ran once');
  const batches = series(m, 'infergrid_inference_batch_executions_total', w);
  const rows = batches.reduce((n, b) => n + Number(b.labels.batch_size) * b.value, 0);
  const runs = batches.reduce((n, b) => n + b.value, 0);
  assert.equal(rows, inferences, 'batch sizes account for every inference');
  assert.equal(runs, executions, 'one execution per batch');
  assert.ok(executions < 10, `requests were batched (${executions} executions for 10 requests)`);
  // the same figures from the worker's statistics (Triton's extension) agree
  const stats = (await (await fetch(`${coordinator.url}/v2/models/s/stats`)).json()) as {
    model_stats: { inference_count: number; execution_count: number }[];
  };
  assert.equal(stats.model_stats[0]!.inference_count, inferences);
  assert.equal(stats.model_stats[0]!.execution_count, executions);
  assert.equal(
    value(m, 'infergrid_inference_queue_duration_seconds_count', w),
    10,
    'one queue wait per request',
  );
  assert.equal(value(m, 'infergrid_inference_compute_duration_seconds_count', w), executions);
  assert.equal(value(m, 'infergrid_inference_request_failure_total', { ...w, reason: 'error' }), 0);
  assert.ok(
    series(m, 'process_cpu_seconds_total', {}).length >= 2,
    'process figures of the coordinator and the worker',
  );

  // the worker's own page: the same counts, without a worker label
  const port = (worker.ready as { metricsPort?: number }).metricsPort;
  assert.ok(typeof port === 'number' && port > 0, 'the worker reported its metrics port');
  const own = await scrape(`http://127.0.0.1:${port}/metrics`);
  assert.equal(value(own, 'infergrid_inference_request_success_total', { model: 's' }), 10);
  assert.equal(value(own, 'infergrid_inference_exec_count_total', { model: 's' }), executions);
  assert.equal(series(own, 'infergrid_inference_count_total', { worker: 'wm' }).length, 0);
});
