/**
 * Dynamic batching and admission control with real processes, judged by the workers' own
 * statistics rather than by timing: batch sizes under load and alone, overload turned away
 * at once with Retry-After while everything admitted succeeds, and a queued request that its
 * client abandons leaving the queue.
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const IO = `
    inputs: [{ name: x, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 4] }]`;
const QUEUE_DELAY_MS = 50;

const CONFIG = `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 5000 }
routing: { retry: { maxAttempts: 2 } }
models:
  - name: alone
    backend: sim
    sim: { latencyMs: 20, perItemMs: 1 }
    maxBatchSize: 8
    batching: { enabled: true, maxQueueDelayMs: ${QUEUE_DELAY_MS} }${IO}
  - name: busy
    backend: sim
    sim: { latencyMs: 20, perItemMs: 1 }
    maxBatchSize: 8
    batching: { enabled: true, maxQueueDelayMs: ${QUEUE_DELAY_MS} }${IO}
  - name: tight
    backend: sim
    sim: { latencyMs: 200 }
    maxBatchSize: 4
    batching: { enabled: true, maxQueueSize: 4 }${IO}
  - name: single
    backend: sim
    sim: { latencyMs: 400 }${IO}
`;

interface ModelStats {
  inference_count: number;
  execution_count: number;
  inference_stats: { queue: { count: number; ns: number } };
  batch_stats: { batch_size: number; compute_infer: { count: number } }[];
  infergrid: { queue_max_ns: number; rejected: { overloaded: number; deadline: number; cancelled: number } };
}

async function stats(url: string, model: string): Promise<ModelStats> {
  const body = (await (await fetch(`${url}/v2/models/${model}/stats`)).json()) as {
    model_stats: ModelStats[];
  };
  return body.model_stats[0]!;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

const x = (v: number) => [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [v, v, v, v] }];

test("batching - batch sizes, overload and abandoned requests, from the workers' statistics", {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const workers = await Promise.all(
    ['w1', 'w2'].map((id) => startWorker(t, config, id, { coordinator: coordinator.rpcAddress })),
  );
  await waitForWorkers(coordinator.url, 2, ['alone', 'busy', 'tight', 'single']);
  const { client, url } = coordinator;

  await t.test('at concurrency 1 every batch has one request, and none waited for company', async () => {
    for (let i = 0; i < 40; i++)
      assert.deepEqual((await client.infer('alone', x(i))).outputs[0]!.data, [i, i, i, i]);
    const s = await stats(url, 'alone');
    assert.deepEqual(
      s.batch_stats.map((b) => [b.batch_size, b.compute_infer.count]),
      [[1, 40]],
    );
    assert.equal(s.inference_count, 40);
    assert.ok(
      s.infergrid.queue_max_ns < QUEUE_DELAY_MS * 1e6,
      `a lone request waited ${s.infergrid.queue_max_ns / 1e6} ms`,
    );
  });

  await t.test('at concurrency 32 with maxBatchSize 8 the mean executed batch is above 4', async () => {
    let next = 0;
    const loop = async (): Promise<void> => {
      while (next < 640) {
        const i = next++;
        assert.deepEqual(
          (await client.infer('busy', x(i))).outputs[0]!.data,
          [i, i, i, i],
          'each request gets its own rows back',
        );
      }
    };
    await Promise.all(Array.from({ length: 32 }, loop));
    const s = await stats(url, 'busy');
    const mean = s.inference_count / s.execution_count;
    t.diagnostic(
      `busy: ${s.inference_count} requests in ${s.execution_count} batches, mean batch ${mean.toFixed(2)}; sizes ${JSON.stringify(s.batch_stats.map((b) => [b.batch_size, b.compute_infer.count]))}`,
    );
    assert.equal(s.inference_count, 640);
    assert.ok(mean > 4, `mean batch size ${mean}`);
    assert.ok(
      s.batch_stats.every((b) => b.batch_size <= 8),
      'never above maxBatchSize',
    );
  });

  await t.test(
    '10x more concurrent requests than the queues hold: the excess is refused at once, the rest succeeds',
    async () => {
      // each worker's queue holds 4 (the first arrival runs at once, alone); 2 workers; 160 at once
      const results = await Promise.all(
        Array.from({ length: 160 }, async (_, i) => {
          const started = performance.now();
          const res = await fetch(`${url}/v2/models/tight/infer`, {
            method: 'POST',
            body: JSON.stringify({ inputs: x(i) }),
            headers: { 'content-type': 'application/json' },
          });
          const body = (await res.json()) as { outputs?: { data: number[] }[]; code?: string };
          return {
            i,
            status: res.status,
            retryAfter: res.headers.get('retry-after'),
            body,
            ms: performance.now() - started,
          };
        }),
      );
      const ok = results.filter((r) => r.status === 200);
      const refused = results.filter((r) => r.status !== 200);
      for (const r of ok) assert.deepEqual(r.body.outputs![0]!.data, [r.i, r.i, r.i, r.i]);
      for (const r of refused) {
        assert.equal(r.status, 429, `refused with ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.code, 'OVERLOADED');
        assert.equal(r.retryAfter, '1');
      }
      const latencies = ok.map((r) => r.ms).sort((a, b) => a - b);
      const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? latencies[latencies.length - 1]!;
      const rss = workers.map((w) => rssBytes(w.child.pid!));
      t.diagnostic(
        `overload: ${ok.length} admitted, ${refused.length} refused; admitted p99 ${p99.toFixed(0)} ms; worker RSS ${rss.map((b) => (b / 2 ** 20).toFixed(0)).join(', ')} MiB`,
      );
      assert.ok(ok.length >= 8, `at least what the queues hold was served (${ok.length})`);
      assert.ok(refused.length >= 100, `most of the excess was refused (${refused.length})`);
      // an admitted request waits for at most one batch and runs in the next: 2 × 200 ms, plus slack for 2 busy cores
      assert.ok(p99 < 2000, `admitted p99 ${p99} ms`);
      for (const b of rss) assert.ok(b < 300 * 2 ** 20, `worker RSS ${b} bytes over the 300 MiB bound`);
      const s = await stats(url, 'tight');
      assert.ok(s.infergrid.rejected.overloaded >= refused.length, 'every refusal is counted by reason');
      assert.ok(s.batch_stats.every((b) => b.batch_size <= 4));
    },
  );

  await t.test('a queued request whose client goes away leaves the queue without running', async () => {
    // "single" runs one request at a time (no batching): the first runs, the second queues
    const first = client.infer('single', x(1), { parameters: { shard_key: 'same' } });
    const controller = new AbortController();
    const second = client
      .infer('single', x(2), { signal: controller.signal, parameters: { shard_key: 'same' } })
      .catch((e: Error) => e);
    const third = client.infer('single', x(3), { parameters: { shard_key: 'same' } });
    void second;
    await waitFor('a request to be queued behind a running one', async () => {
      const body = (await (await fetch(`${url}/v2/models/single/stats`)).json()) as {
        model_stats: { infergrid: { workers: { queue_depth: number }[] } }[];
      };
      return body.model_stats[0]!.infergrid.workers.some((w) => w.queue_depth >= 1);
    });
    controller.abort();
    await first;
    await third;
    await waitFor(
      'the abandoned request to be counted',
      async () => (await stats(url, 'single')).infergrid.rejected.cancelled === 1,
    );
    const s = await stats(url, 'single');
    assert.equal(s.inference_count, 2, 'the abandoned request never reached the model');
  });
});
