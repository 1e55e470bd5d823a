/**
 * Chaos under load: four real workers (sim, 20 ms per request) behind a coordinator, a steady
 * closed-loop load of concurrent requests; mid-run one worker is killed with SIGKILL and
 * another drained with SIGTERM, then the killed one is restarted. No client request may
 * fail: what was in flight on the dead worker is retried elsewhere, the draining worker
 * finishes its own, and the restarted worker gets traffic again.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type Spawned,
  adminWorkers,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const HEALTH_INTERVAL_MS = 200;
const CONCURRENCY = 32;
const TOTAL = 3000;

const CONFIG = `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 1000, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 }
routing:
  health: { intervalMs: ${HEALTH_INTERVAL_MS}, timeoutMs: ${HEALTH_INTERVAL_MS}, failureThreshold: 2, recoveryThreshold: 1 }
  retry: { maxAttempts: 3 }
workers: [{ id: w1 }, { id: w2 }, { id: w3 }, { id: w4 }]
models:
  - name: sim20
    backend: sim
    sim: { latencyMs: 20 }
    inputs: [{ name: x, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 4] }]
`;

test('chaos - a killed and a drained worker under load cost no client request', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const workers = new Map<string, Spawned>();
  const spawn = async (id: string) =>
    workers.set(id, await startWorker(t, config, id, { coordinator: coordinator.rpcAddress }));
  await Promise.all(['w1', 'w2', 'w3', 'w4'].map(spawn));
  await waitForWorkers(coordinator.url, 4, ['sim20']);

  const url = `${coordinator.url}/v2/models/sim20/infer`;
  const body = JSON.stringify({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }],
  });
  let ok = 0;
  const failures: string[] = [];
  let sent = 0;
  const events: Promise<void>[] = [];
  const facts: Record<string, number> = {};

  const onProgress = (done: number): void => {
    if (done === 800) {
      events.push(
        (async () => {
          const w1 = (await adminWorkers(coordinator.url)).find((w) => w.id === 'w1')!;
          const killedAt = Date.now();
          process.kill(w1.pid, 'SIGKILL');
          await waitFor(
            'w1 to leave the pool',
            async () => !(await adminWorkers(coordinator.url)).some((w) => w.id === 'w1' && w.pid === w1.pid),
            5000,
          );
          facts.detectMs = Date.now() - killedAt;
        })(),
      );
    }
    if (done === 1400) {
      events.push(
        (async () => {
          const w2 = workers.get('w2')!;
          w2.child.kill('SIGTERM');
          facts.drainExitCode = Number(await w2.exited);
        })(),
      );
    }
    if (done === 1800) {
      events.push(
        (async () => {
          const restartedAt = Date.now();
          await spawn('w1');
          await waitFor(
            'the restarted w1 to serve requests',
            async () => ((await adminWorkers(coordinator.url)).find((w) => w.id === 'w1')?.requests ?? 0) > 0,
            20_000,
          );
          facts.recoverMs = Date.now() - restartedAt;
        })(),
      );
    }
  };

  const loop = async (): Promise<void> => {
    // keep the load going until the planned total is reached and every event has played out
    while (sent < TOTAL || facts.recoverMs === undefined) {
      if (sent >= TOTAL * 4) break;
      sent++;
      try {
        const res = await fetch(url, {
          method: 'POST',
          body,
          headers: { 'content-type': 'application/json' },
        });
        const text = await res.text();
        if (res.status === 200) ok++;
        else failures.push(`${res.status} ${text.slice(0, 200)}`);
      } catch (err) {
        failures.push(String(err));
      }
      onProgress(ok + failures.length);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, loop));
  await Promise.all(events);

  const final = await adminWorkers(coordinator.url);
  const routing = (await (await fetch(`${coordinator.url}/admin/workers`)).json()) as {
    routing: { retries: number };
  };
  t.diagnostic(
    `requests ok ${ok}, failed ${failures.length}; retries ${routing.routing.retries}; ` +
      `killed worker detected in ${facts.detectMs} ms; restarted worker served again ${facts.recoverMs} ms after its start`,
  );
  assert.deepEqual(failures, [], 'no client request failed');
  assert.ok(ok >= TOTAL);
  assert.ok(
    facts.detectMs! <= HEALTH_INTERVAL_MS,
    `the killed worker stopped getting picks within one health interval (${facts.detectMs} ms)`,
  );
  assert.equal(facts.drainExitCode, 0, 'the drained worker finished its requests and exited 0');
  assert.deepEqual(final.map((w) => w.id).sort(), ['w1', 'w3', 'w4']);
  assert.ok(final.find((w) => w.id === 'w1')!.requests > 0, 'the restarted worker gets traffic');
});

test('chaos - a frozen worker (SIGSTOP) is marked unhealthy, then removed when its heartbeats stop, and rejoins when it thaws', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 1500, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 }
routing:
  health: { intervalMs: 100, timeoutMs: 100, failureThreshold: 2, recoveryThreshold: 1 }
models:
  - name: m
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`,
  );
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'steady', { coordinator: coordinator.rpcAddress });
  const frozen = await startWorker(t, config, 'frozen', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 2, ['m']);
  const pid = frozen.child.pid!;
  process.kill(pid, 'SIGSTOP');
  t.after(() => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {}
  });
  type Health = { id: string; health: { state: string } };
  await waitFor('the frozen worker to fail its health checks', async () => {
    const w = ((await adminWorkers(coordinator.url)) as unknown as Health[]).find((x) => x.id === 'frozen');
    return w?.health.state === 'unhealthy';
  });
  // while it is unhealthy every request goes to the other worker
  const steadyBefore = (await adminWorkers(coordinator.url)).find((w) => w.id === 'steady')!.requests;
  for (let i = 0; i < 10; i++)
    await coordinator.client.infer('m', [{ name: 'x', datatype: 'FP32', shape: [1], data: [i] }]);
  const workersNow = await adminWorkers(coordinator.url);
  assert.equal(workersNow.find((w) => w.id === 'steady')!.requests - steadyBefore, 10);
  assert.equal(workersNow.find((w) => w.id === 'frozen')?.requests ?? 0, 0);
  await waitFor(
    'the frozen worker to be dropped when its heartbeats stop',
    async () => !(await adminWorkers(coordinator.url)).some((w) => w.id === 'frozen'),
  );
  process.kill(pid, 'SIGCONT');
  const [back] = (await waitForWorkers(coordinator.url, 2, ['m'])).filter((w) => w.id === 'frozen');
  assert.equal(back!.pid, pid, 'the same process rejoined without restarting anything');
  assert.equal(back!.requests, 0);
});
