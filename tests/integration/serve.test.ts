/**
 * `infergrid serve`: coordinator plus supervised local workers from one config. A crashed
 * worker is restarted and gets traffic again; SIGTERM stops everything and exits 0.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InferenceClient } from '../../src/client/index.ts';
import { adminWorkers, spawnInfergrid, waitFor, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

const CONFIG = `
coordinator: { port: 0, rpcPort: 0 }
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000 }
serve: { restartInitialDelayMs: 50, restartMaxDelayMs: 200 }
workers: [{ id: w1 }, { id: w2 }]
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: INT32, shape: [-1] }]
    outputs: [{ name: OUTPUT0, datatype: INT32, shape: [-1] }]
`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('serve - starts, supervises and stops a coordinator with its workers', {
  timeout: 90_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const serve = await spawnInfergrid(t, ['serve', '--config', config]);
  const url = `http://127.0.0.1:${serve.ready.httpPort}`;
  const client = new InferenceClient(url);
  assert.ok(serve.output().includes(`infergrid is serving at ${url}`), 'prints the address');
  assert.ok(await client.serverReady());

  // serve is ready once every model has a ready replica; the second worker may still be joining
  const before = await waitForWorkers(url, 2, ['echo']);
  assert.deepEqual(before.map((w) => w.id).sort(), ['w1', 'w2']);
  const victim = before.find((w) => w.id === 'w1')!;
  process.kill(victim.pid, 'SIGKILL');
  const restarted = await waitFor('w1 to be restarted and ready', async () => {
    const w = (await adminWorkers(url)).find((x) => x.id === 'w1');
    return w && w.pid !== victim.pid && w.models.every((m) => m.state === 'ready') ? w : undefined;
  });
  assert.ok(alive(restarted.pid));
  for (let i = 0; i < 4; i++) {
    const res = await client.infer('echo', [
      { name: 'INPUT0', datatype: 'INT32', shape: [3], data: [i, 2, 3] },
    ]);
    assert.deepEqual(res.outputs[0]!.data, [i, 2, 3]);
  }
  const served = await adminWorkers(url);
  assert.ok(served.find((w) => w.id === 'w1')!.requests > 0, 'the restarted worker gets traffic again');

  const pids = served.map((w) => w.pid);
  assert.equal(await serve.stop(), 0, 'serve exits 0 on SIGTERM');
  for (const pid of pids) await waitFor(`worker ${pid} to be gone`, () => !alive(pid), 10_000);
});
