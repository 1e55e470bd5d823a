/**
 * The HTTP front door and the RPC port against peers that hold sockets: a client that trickles
 * its headers or its body is closed after coordinator.headersTimeoutMs / bodyTimeoutMs,
 * connections past coordinator.maxConnections are closed as they arrive, and so are RPC
 * connections past rpc.maxPendingHandshakes. Real coordinator processes; the tests wait on
 * socket events, never on a clock.
 */

import assert from 'node:assert/strict';
import { type Socket, connect } from 'node:net';
import { test } from 'node:test';
import { startCoordinator, startWorker, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

/** A raw socket to the coordinator, with everything it received and a promise of its close. */
async function open(url: string): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  let text = '';
  socket.on('data', (d) => {
    text += d.toString('latin1');
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received: () => text, closed };
}

test('http limits - a client that trickles its headers or its body is closed, and the server answers on', {
  timeout: 60_000,
}, async (t) => {
  const coordinator = await startCoordinator(
    t,
    writeConfig(t, 'coordinator: { headersTimeoutMs: 400, bodyTimeoutMs: 800 }\nmodels: []\n'),
  );
  const slowHeaders = await open(coordinator.url);
  t.after(() => slowHeaders.socket.destroy());
  slowHeaders.socket.write('POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  const slowBody = await open(coordinator.url);
  t.after(() => slowBody.socket.destroy());
  slowBody.socket.write(
    'POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"inp',
  );
  await slowHeaders.closed;
  await slowBody.closed;
  // closed with a 408 in the engine's error shape, or before any answer
  assert.match(slowHeaders.received(), /^(HTTP\/1\.1 408 [\s\S]*"code":"REQUEST_TIMEOUT"\}|)$/);
  assert.match(slowBody.received(), /^(HTTP\/1\.1 408 [\s\S]*"code":"REQUEST_TIMEOUT"\}|)$/);
  assert.equal((await fetch(`${coordinator.url}/v2/health/live`)).status, 200);
});

test('http limits - connections past maxConnections are closed as they arrive; the others are served', {
  timeout: 60_000,
}, async (t) => {
  const coordinator = await startCoordinator(
    t,
    writeConfig(t, 'coordinator: { maxConnections: 3 }\nmodels: []\n'),
  );
  const held = await Promise.all([open(coordinator.url), open(coordinator.url), open(coordinator.url)]);
  t.after(() => {
    for (const h of held) h.socket.destroy();
  });
  const extra = await open(coordinator.url);
  t.after(() => extra.socket.destroy());
  await extra.closed;
  assert.equal(extra.received(), '', 'closed without an answer');
  // the held ones still work: a request on one of them is answered
  const first = held[0]!;
  first.socket.write('GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  await first.closed;
  assert.match(first.received(), /^HTTP\/1\.1 200/);
});

test('rpc limits - connections that never handshake are capped; the port still admits a worker once they go', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(
    t,
    `rpc: { maxPendingHandshakes: 3, handshakeTimeoutMs: 60000 }
models:
  - name: m
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`,
  );
  const coordinator = await startCoordinator(t, config);
  const rpcUrl = `http://${coordinator.rpcAddress}`;
  const silent = await Promise.all([open(rpcUrl), open(rpcUrl), open(rpcUrl)]);
  t.after(() => {
    for (const s of silent) s.socket.destroy();
  });
  const extra = await open(rpcUrl);
  t.after(() => extra.socket.destroy());
  await extra.closed;
  assert.equal(extra.received(), '', 'closed at once, before any handshake');
  // the silent ones leave; their places free up, and a real worker joins
  for (const s of silent) s.socket.destroy();
  await Promise.all(silent.map((s) => s.closed));
  await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  const res = await coordinator.client.infer('m', [{ name: 'x', datatype: 'FP32', shape: [1], data: [2] }]);
  assert.deepEqual(res.outputs[0]!.data, [2]);
});

/** The status and parsed JSON body of the one raw answer a socket received. */
function answerOf(raw: string): { status: number; body: Record<string, unknown> } {
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(raw)?.[1]);
  const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
  return { status, body };
}

test('http limits - a URL the router cannot decode or a path parameter over 100 characters gets the engine error shape', {
  timeout: 60_000,
}, async (t) => {
  const coordinator = await startCoordinator(t, writeConfig(t, 'models: []\n'));
  for (const path of ['/v2/models/%zz/infer', '/v2/%c0%af', `/v2/models/${'m'.repeat(101)}`]) {
    const res = await fetch(`${coordinator.url}${path}`, { method: path.endsWith('infer') ? 'POST' : 'GET' });
    assert.equal(res.status, 400, path);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.code, 'MALFORMED_REQUEST', path);
    assert.equal(typeof body.error, 'string');
    assert.equal(body.statusCode, undefined, 'not fastify’s own shape');
  }
});

test('http limits - headers over 16 KiB or bytes that are not HTTP get the engine error shape, and the server answers on', {
  timeout: 60_000,
}, async (t) => {
  const coordinator = await startCoordinator(t, writeConfig(t, 'models: []\n'));
  const big = await open(coordinator.url);
  t.after(() => big.socket.destroy());
  big.socket.write(`GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: ${'x'.repeat(17_000)}\r\n\r\n`);
  const garbage = await open(coordinator.url);
  t.after(() => garbage.socket.destroy());
  garbage.socket.write('\x00\x01 not http at all\r\n\r\n');
  await Promise.all([big.closed, garbage.closed]);
  const tooLarge = answerOf(big.received());
  assert.equal(tooLarge.status, 431);
  assert.equal(tooLarge.body.code, 'HEADERS_TOO_LARGE');
  const malformed = answerOf(garbage.received());
  assert.equal(malformed.status, 400);
  assert.equal(malformed.body.code, 'MALFORMED_REQUEST');
  assert.equal((await fetch(`${coordinator.url}/v2/health/live`)).status, 200);
});
