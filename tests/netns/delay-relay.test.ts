/**
 * The delaying relay (tests/fixtures/delay-relay.ts) that makes a distant host: bytes pass
 * unchanged and in order both ways, every exchange takes at least the delay each way, and an
 * orderly end goes through. Runs on loopback: it needs no namespaces.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer } from 'node:net';
import { test } from 'node:test';
import { DELAY_RELAY_SCRIPT } from '../fixtures/netns.ts';
import { spawnInfergrid } from '../fixtures/processes.ts';

const DELAY_MS = 40;

test('delay relay - bytes arrive unchanged and in order both ways, each direction at least the delay late', {
  timeout: 30_000,
}, async (t) => {
  // an echo server that answers each chunk with the same bytes
  const echo = createServer((s) => s.pipe(s));
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  t.after(() => echo.close());
  const relay = await spawnInfergrid(
    t,
    [
      '--listen',
      '127.0.0.1:0',
      '--target',
      `127.0.0.1:${(echo.address() as AddressInfo).port}`,
      '--delay-ms',
      String(DELAY_MS),
    ],
    { script: DELAY_RELAY_SCRIPT },
  );
  const socket = connect({ host: '127.0.0.1', port: relay.ready.port! });
  t.after(() => socket.destroy());
  await once(socket, 'connect');

  // one round trip: at least the delay there and the delay back
  const started = performance.now();
  socket.write('ping');
  const [first] = (await once(socket, 'data')) as [Buffer];
  const roundTripMs = performance.now() - started;
  assert.equal(first.toString(), 'ping');
  assert.ok(roundTripMs >= 2 * DELAY_MS - 2, `a round trip took ${roundTripMs} ms, under twice the delay`);

  // many chunks written back to back come back whole and in order
  const chunks = Array.from({ length: 200 }, (_, i) => `<${i}:${'x'.repeat(i % 50)}>`);
  const expected = chunks.join('');
  let received = '';
  const all = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      received += d;
      if (received.length >= expected.length) resolve();
    });
  });
  for (const c of chunks) socket.write(c);
  await all;
  assert.equal(received, expected);

  // an orderly end is passed on: the echo server ends its side, and the relay ends ours
  socket.end();
  await once(socket, 'end');
});
