/**
 * Passive outlier detection with real processes: a worker that accepts connections but fails
 * every request is ejected by its circuit breaker after the configured number of failures
 * (clients never see those failures: each is retried on the healthy worker), and is
 * readmitted through a half-open probe once it recovers. A client's bad input that reaches a
 * worker never counts against it.
 */

import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { InferenceClientError } from '../../src/client/index.ts';
import {
  adminWorkers,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const FAILURE_THRESHOLD = 3;
const x = (v: number) => [{ name: 'x', datatype: 'FP32', shape: [1], data: [v] }];

function simConfig(failureRate: number): string {
  return `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000 }
routing:
  strategy: round-robin
  circuitBreaker: { failureThreshold: ${FAILURE_THRESHOLD}, openMs: 60000, maxOpenMs: 60000 }
models:
  - name: s
    backend: sim
    sim: { failureRate: ${failureRate} }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;
}

async function modelStats(url: string, id: string) {
  const w = (await adminWorkers(url)).find((w) => w.id === id);
  return (w?.models[0] ?? {}) as {
    circuit?: string;
    picks?: number;
    circuitOpens?: number;
    consecutiveFailures?: number;
  };
}

test('circuit breaker - a worker failing every request (sim, 100%) is ejected after the configured failures', {
  timeout: 60_000,
}, async (t) => {
  const healthyConfig = writeConfig(t, simConfig(0));
  const failingConfig = writeConfig(t, simConfig(1));
  const coordinator = await startCoordinator(t, healthyConfig);
  await startWorker(t, healthyConfig, 'good', { coordinator: coordinator.rpcAddress });
  await startWorker(t, failingConfig, 'bad', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 2, ['s']);

  for (let i = 0; i < 30; i++)
    assert.deepEqual((await coordinator.client.infer('s', x(i))).outputs[0]!.data, [i]);
  const bad = await modelStats(coordinator.url, 'bad');
  const good = await modelStats(coordinator.url, 'good');
  assert.equal(bad.circuit, 'open');
  assert.equal(bad.circuitOpens, 1);
  assert.equal(bad.picks, FAILURE_THRESHOLD, 'picked exactly until its circuit opened, then never again');
  assert.equal(good.circuit, 'closed');
  assert.equal(good.picks, 30, 'every request was answered by the healthy worker (3 of them as retries)');
});

test('circuit breaker - a recovered worker is readmitted by a half-open probe; bad input never ejects', {
  timeout: 60_000,
}, async (t) => {
  const flagDir = writeConfig(t, '').replace(/config\.yaml$/, '');
  const sickFlag = join(flagDir, 'sick');
  writeFileSync(sickFlag, '');
  const model = fileURLToPath(new URL('../fixtures/models/toggle-failure.ts', import.meta.url));
  const config = (flag: string) => `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000 }
routing:
  strategy: round-robin
  circuitBreaker: { failureThreshold: ${FAILURE_THRESHOLD}, openMs: 200, maxOpenMs: 400 }
models:
  - name: m
    backend: js
    path: ${model}
    options: { failWhileExists: ${JSON.stringify(flag)} }
`;
  const goodConfig = writeConfig(t, config(join(flagDir, 'never')));
  const badConfig = writeConfig(t, config(sickFlag));
  const coordinator = await startCoordinator(t, goodConfig);
  await startWorker(t, goodConfig, 'good', { coordinator: coordinator.rpcAddress });
  await startWorker(t, badConfig, 'sick', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 2, ['m']);

  // sick: every request that reaches it fails and is retried on the good one
  await waitFor('the sick worker to be ejected', async () => {
    assert.deepEqual((await coordinator.client.infer('m', x(1))).outputs[0]!.data, [1]);
    return (await modelStats(coordinator.url, 'sick')).circuitOpens === 1;
  });

  // recovered: the next half-open probe succeeds and closes the circuit
  rmSync(sickFlag);
  await waitFor('the recovered worker to be readmitted', async () => {
    assert.deepEqual((await coordinator.client.infer('m', x(2))).outputs[0]!.data, [2]);
    return (await modelStats(coordinator.url, 'sick')).circuit === 'closed';
  });
  const before = (await modelStats(coordinator.url, 'sick')).picks!;
  for (let i = 0; i < 10; i++) await coordinator.client.infer('m', x(3));
  const after = await modelStats(coordinator.url, 'sick');
  assert.equal(after.picks! - before, 5, 'round-robin gives the readmitted worker its half again');

  // a client's bad input reaches the workers (the model refuses it) and is never held against them
  for (let i = 0; i < 4 * FAILURE_THRESHOLD; i++) {
    await assert.rejects(coordinator.client.infer('m', x(-1)), (err: unknown) => {
      assert.ok(err instanceof InferenceClientError);
      assert.equal(err.status, 400);
      assert.match(err.message, /x must not be negative/);
      return true;
    });
  }
  for (const id of ['good', 'sick']) {
    const s = await modelStats(coordinator.url, id);
    assert.equal(s.circuit, 'closed', `${id} stays in rotation after bad input`);
    assert.equal(s.consecutiveFailures, 0);
  }
  const workers = await adminWorkers(coordinator.url);
  assert.equal(workers.find((w) => w.id === 'good')!.failures, 0);
});

test('circuit breaker - a model that throws on one input is answered with one error: no retry on other replicas, no breaker opened', {
  timeout: 60_000,
}, async (t) => {
  const model = fileURLToPath(new URL('../fixtures/models/throws-on-input.ts', import.meta.url));
  const config = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000 }
routing:
  strategy: round-robin
  retry: { maxAttempts: 3 }
  circuitBreaker: { failureThreshold: ${FAILURE_THRESHOLD}, openMs: 60000, maxOpenMs: 60000 }
models:
  - name: m
    backend: js
    path: ${model}
`,
  );
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'a', { coordinator: coordinator.rpcAddress });
  await startWorker(t, config, 'b', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 2, ['m']);

  const poisoned = 4 * FAILURE_THRESHOLD;
  for (let i = 0; i < poisoned; i++) {
    await assert.rejects(coordinator.client.infer('m', x(13)), (err: unknown) => {
      assert.ok(err instanceof InferenceClientError);
      assert.equal(err.status, 500);
      assert.equal(err.code, 'BACKEND_ERROR');
      assert.match(err.message, /cannot handle 13/);
      return true;
    });
  }
  const picks =
    (await modelStats(coordinator.url, 'a')).picks! + (await modelStats(coordinator.url, 'b')).picks!;
  assert.equal(picks, poisoned, 'each failing request went to exactly one replica');
  const admin = (await (await fetch(`${coordinator.url}/admin/workers`)).json()) as {
    routing: { retries: number };
  };
  assert.equal(admin.routing.retries, 0, 'no failing request was retried');
  for (const id of ['a', 'b']) {
    const s = await modelStats(coordinator.url, id);
    assert.equal(s.circuit, 'closed', `${id} stays in rotation`);
    assert.equal(s.circuitOpens, 0);
    assert.equal(s.consecutiveFailures, 0);
  }
  for (const w of await adminWorkers(coordinator.url)) assert.equal(w.failures, 0, `${w.id} was not blamed`);
  // and both replicas still answer every other input
  for (let i = 0; i < 4; i++)
    assert.deepEqual((await coordinator.client.infer('m', x(i))).outputs[0]!.data, [i]);
});
