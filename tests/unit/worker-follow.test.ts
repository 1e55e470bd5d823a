/**
 * A worker's coordinator links at run time (what following the cluster membership calls): one
 * dialed when it joins, no longer redialed when it leaves, with the connection that is up left to
 * finish its requests; and one that comes back before that connection closed is redialed once it
 * has. The coordinator here is a real RPC listener on loopback that counts the workers it admits.
 */

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { createBackends } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { MESSAGE_KIND, checkInferResponse } from '../../src/protocol/index.ts';
import { RpcConnection, acceptHandshake } from '../../src/rpc/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { ModelHost, Worker } from '../../src/worker/index.ts';
import { waitFor } from '../fixtures/processes.ts';

test('worker - a coordinator that left is not redialed, its live connection finishes its request, and one back is redialed after it closes', {
  timeout: 30_000,
}, async (t) => {
  const config = configSchema.parse({
    models: [
      {
        name: 'echo',
        backend: 'sim',
        sim: { latencyMs: 200 },
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
      },
    ],
    rpc: { reconnectInitialDelayMs: 20, reconnectMaxDelayMs: 100 },
  });
  const admitted: RpcConnection[] = [];
  const server = createServer((socket) => {
    const conn = new RpcConnection(socket, {
      maxFrameBytes: config.rpc.maxFrameBytes,
      heartbeatIntervalMs: 0,
      peerTimeoutMs: 0,
      side: 'listener',
    });
    acceptHandshake(conn, { role: 'coordinator', id: 'c' }, 3000)
      .then(() => conn.receive(3000, 'REGISTER'))
      .then(
        () => admitted.push(conn),
        () => conn.close(),
      );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const c of admitted) c.close();
    server.close();
  });
  const address = { host: '127.0.0.1', port: (server.address() as { port: number }).port };
  const label = `127.0.0.1:${address.port}`;

  const host = new ModelHost(createBackends(), silentLogger());
  await host.load(config.models[0]!);
  const worker = new Worker({ id: 'w', host, rpc: config.rpc, logger: silentLogger() });
  await worker.start();
  t.after(() => worker.close());

  assert.equal(worker.dialCoordinator(address), true);
  assert.equal(worker.dialCoordinator(address), false, 'dialed once');
  await waitFor('the worker admitted', () => admitted.length === 1, 10_000);
  const first = admitted[0]!;

  // a request is running when the coordinator leaves the cluster
  const meta = { model: 'echo', version: '1', inputs: [{ name: 'x', datatype: 'FP32', shape: [2] }] };
  const answer = first.request(MESSAGE_KIND.INFER_REQUEST, meta, [
    new Uint8Array(new Float32Array([1, 2]).buffer),
  ]);
  await waitFor('the request running', () => worker.inFlight === 1, 10_000);
  let stopped = false;
  const stopping = worker.stopDialingCoordinator(address).then(() => {
    stopped = true;
  });
  assert.deepEqual(worker.dialing, [], 'no longer dialed');
  const frame = await answer;
  assert.equal(checkInferResponse(frame.meta).outputs.length, 1, 'the request in flight was answered');
  assert.equal(stopped, false, 'the connection stays until it closes');

  // back before that connection closed: redialed once it has, not while it is up
  assert.equal(worker.dialCoordinator(address), true);
  assert.deepEqual(worker.dialing, [label]);
  // a full request on the old connection (200 ms of sim latency): a link that dialed at once would
  // have been admitted by now; a correct one has not dialed at all
  const again = await first.request(MESSAGE_KIND.INFER_REQUEST, meta, [
    new Uint8Array(new Float32Array([3, 4]).buffer),
  ]);
  assert.equal(checkInferResponse(again.meta).outputs.length, 1, 'the old connection still serves');
  assert.equal(admitted.length, 1, 'not redialed while the old connection is up');
  first.close();
  await stopping;
  await waitFor('the worker redialed', () => admitted.length === 2, 10_000);
  assert.equal(admitted.filter((c) => !c.closed).length, 1);
});
