/**
 * A worker under two coordinators forms its batches from both: while the model runs one
 * request, three more arrive through coordinator A and three through coordinator B; once the
 * model is free they run as one batch of six, more than either coordinator sent. Judged by the
 * worker's own queue gauge and batch statistics, not by timing.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const CONFIG = `
models:
  - name: m
    backend: sim
    sim: { latencyMs: 1500 }
    maxBatchSize: 8
    batching: { enabled: true, maxQueueDelayMs: 0 }
    inputs: [{ name: x, datatype: FP32, shape: [-1, 1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 1] }]
`;

async function infer(url: string, v: number): Promise<number[]> {
  const res = await fetch(`${url}/v2/models/m/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [v] }] }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { outputs: { data: number[] }[] };
  return body.outputs[0]!.data;
}

async function queued(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^infergrid_inference_pending_requests\{[^}]*model="m"[^}]*\} (\d+)$/gm)) {
    sum += Number(m[1]);
  }
  return sum;
}

test('cluster batching - one batch on a shared worker holds requests from both coordinators', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const a = await startCoordinator(t, config);
  const b = await startCoordinator(t, config);
  await startWorker(t, config, 'w1', {
    coordinator: a.rpcAddress,
    extraArgs: ['--coordinator', b.rpcAddress],
  });
  await waitForWorkers(a.url, 1, ['m']);
  await waitForWorkers(b.url, 1, ['m']);

  // the model is busy with the first request ...
  const first = infer(a.url, 0);
  await waitFor('the model to be busy', async () => {
    const res = await fetch(`${a.url}/admin/workers`);
    const { workers } = (await res.json()) as { workers: { inFlight: number }[] };
    return workers[0]?.inFlight === 1;
  });
  // ... while three requests queue through A and three through B
  const rest = [1, 2, 3].map((v) => infer(a.url, v)).concat([4, 5, 6].map((v) => infer(b.url, v)));
  await waitFor('six requests queued at the worker', async () => (await queued(a.url)) === 6);
  const answers = await Promise.all([first, ...rest]);
  assert.deepEqual(
    answers.map((d) => d.length),
    [1, 1, 1, 1, 1, 1, 1],
  );

  const stats = (await (await fetch(`${a.url}/v2/models/m/stats`)).json()) as {
    model_stats: {
      inference_count: number;
      execution_count: number;
      batch_stats: { batch_size: number; compute_infer: { count: number } }[];
    }[];
  };
  const s = stats.model_stats[0]!;
  // A's own statistics count its requests; the worker's batches are in batch_stats
  const sizes = Object.fromEntries(s.batch_stats.map((b) => [b.batch_size, Number(b.compute_infer.count)]));
  assert.deepEqual(sizes, { 1: 1, 6: 1 }, `batches by size: ${JSON.stringify(s.batch_stats)}`);
});
