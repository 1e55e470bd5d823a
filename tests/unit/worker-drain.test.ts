/**
 * A draining worker answers what it is running — in full, even when the answer is megabytes
 * still in its socket buffer — refuses new work as retryable, then closes.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createBackends } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { MESSAGE_KIND, checkInferResponse, tensorsFromWire } from '../../src/protocol/index.ts';
import { dial, dialHandshake } from '../../src/rpc/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { ModelHost, Worker } from '../../src/worker/index.ts';
import { isCode } from '../fixtures/assert.ts';

const ELEMENTS = 2 * 1024 * 1024; // 8 MiB of FP32

test('worker - drain answers the request in flight in full, then closes', { timeout: 30_000 }, async (t) => {
  const config = configSchema.parse({
    models: [
      {
        name: 'echo',
        backend: 'sim',
        sim: { latencyMs: 300 },
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
      },
    ],
  });
  const host = new ModelHost(createBackends(), silentLogger());
  await host.load(config.models[0]!);
  const worker = new Worker({
    id: 'w',
    host,
    listen: { host: '127.0.0.1', port: 0 },
    rpc: config.rpc,
    logger: silentLogger(),
  });
  await worker.start();
  t.after(() => worker.close());

  const conn = await dial(
    { host: '127.0.0.1', port: worker.port! },
    { maxFrameBytes: config.rpc.maxFrameBytes, heartbeatIntervalMs: 0, peerTimeoutMs: 0 },
    3000,
  );
  t.after(() => conn.close());
  await dialHandshake(conn, { role: 'coordinator', id: 'c' }, 3000);
  const register = await conn.receive(3000, 'REGISTER');
  assert.equal(register.kind, MESSAGE_KIND.REGISTER);
  const drainNotice = new Promise((resolve) =>
    conn.setMessageHandler((f) => f.kind === MESSAGE_KIND.DRAIN && resolve(f.meta)),
  );

  const data = new Float32Array(ELEMENTS).map((_, i) => i % 1000);
  const meta = { model: 'echo', version: '1', inputs: [{ name: 'x', datatype: 'FP32', shape: [ELEMENTS] }] };
  const pending = conn.request(MESSAGE_KIND.INFER_REQUEST, meta, [new Uint8Array(data.buffer)]);
  // the request is running once the worker counts it; drain then
  while (worker.inFlight === 0) await new Promise((r) => setImmediate(r));
  const drained = worker.drain('test');

  await assert.rejects(
    conn.request(MESSAGE_KIND.INFER_REQUEST, meta, [new Uint8Array(data.buffer)]),
    isCode('WORKER_DRAINING'),
  );
  const frame = await pending;
  const [y] = tensorsFromWire(checkInferResponse(frame.meta).outputs, frame.attachments);
  assert.equal(y!.data.byteLength, ELEMENTS * 4, 'the whole answer arrived');
  assert.deepEqual(Buffer.from(y!.data.buffer, y!.data.byteOffset, 4096), Buffer.from(data.buffer, 0, 4096));
  assert.deepEqual(await drainNotice, { reason: 'test' });
  await drained;
  assert.equal(worker.inFlight, 0);
});
