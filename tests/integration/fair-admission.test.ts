/**
 * Fair admission at a worker shared by two coordinators: while coordinator A floods the
 * worker's queue (and gets 429s for it), every request sent through coordinator B, one at a
 * time, is admitted and answered. Judged by outcomes and the worker's own rejection counts,
 * never by timing.
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

const QUEUE = 8;
const CONFIG = `
routing: { retry: { maxAttempts: 1 } }
models:
  - name: m
    backend: sim
    sim: { latencyMs: 40 }
    batching: { enabled: false, maxQueueSize: ${QUEUE} }
    inputs: [{ name: x, datatype: FP32, shape: [-1, 1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 1] }]
`;

async function infer(url: string, v: number): Promise<number> {
  const res = await fetch(`${url}/v2/models/m/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 1], data: [v] }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

test('fair admission - a coordinator flooding a shared worker cannot starve another coordinator', {
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

  // A: 4 × the queue's size in flight, each sender sending again as soon as it is answered
  const flood = { stop: false, ok: 0, refused: 0, other: 0 };
  const senders = Array.from({ length: 4 * QUEUE }, async (_, i) => {
    while (!flood.stop) {
      const status = await infer(a.url, i);
      if (status === 200) flood.ok++;
      else if (status === 429) flood.refused++;
      else flood.other++;
    }
  });
  try {
    await waitFor('the flood to fill the worker queue (A gets 429s)', () => flood.refused > 0);
    // B: one request at a time, always under its share of the queue
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push(await infer(b.url, 1000 + i));
    assert.deepEqual(statuses, Array(20).fill(200), 'every request through B was admitted and answered');
    assert.ok(flood.refused > 0);
  } finally {
    flood.stop = true;
    await Promise.all(senders);
  }
  assert.equal(flood.other, 0, 'A saw only 200 and 429');
  const body = (await (await fetch(`${b.url}/v2/models/m/stats`)).json()) as {
    model_stats: { infergrid: { rejected: { overloaded: number } } }[];
  };
  assert.ok(body.model_stats[0]!.infergrid.rejected.overloaded >= flood.refused, 'the worker refused them');
});
