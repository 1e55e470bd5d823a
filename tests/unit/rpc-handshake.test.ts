/**
 * The RPC handshake (HELLO / HELLO_ACK or a refusal), dial() and the Redialer, over real TCP
 * sockets on loopback. Tests wait on events and promises; timeouts handed to the code under
 * test are small, the overall per-test timeout generous.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { type TestContext, test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import { type Frame, MESSAGE_KIND, PROTOCOL_MAGIC, PROTOCOL_VERSION } from '../../src/protocol/index.ts';
import { Redialer, RpcConnection, acceptHandshake, dial, dialHandshake } from '../../src/rpc/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { type Deferred, deferred } from '../../src/util/deferred.ts';
import { assertCode, isCode } from '../fixtures/assert.ts';
import { QUIET, TIMEOUT, connectPair, nextClose, rawClient, startServer } from '../fixtures/rpc.ts';

const HANDSHAKE_MS = 5000;

// ---------------------------------------------------------------------------------------------
// helpers

/** Settles to the rejection reason (or undefined), so a promise can be awaited later unhandled-free. */
function outcome(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (err: unknown) => err,
  );
}

/** Asserts `frame` is an ERROR frame for the connection (request id 0) with this code. */
function assertErrorFrame(frame: Frame, code: string): void {
  assert.equal(frame.kind, MESSAGE_KIND.ERROR);
  assert.equal(frame.requestId, 0);
  assert.equal((frame.meta as { code: string }).code, code);
}

const hello = (overrides: Record<string, unknown> = {}) => ({
  magic: PROTOCOL_MAGIC,
  protocolVersion: PROTOCOL_VERSION,
  role: 'worker',
  id: 'w1',
  ...overrides,
});

/**
 * Runs a listener's acceptHandshake against a dialer that sends `meta` as its HELLO (or the
 * given kind) by hand, and returns what each side saw.
 */
async function refusedHello(
  t: TestContext,
  kind: number,
  meta: unknown,
  listenerToken?: string,
): Promise<{ accepted: unknown; errorFrame: Frame; listenerClose: unknown; dialerClose: unknown }> {
  const { dialer, listener } = await connectPair(t);
  const listenerClosed = nextClose(listener);
  const dialerClosed = nextClose(dialer);
  const accepted = outcome(
    acceptHandshake(listener, { role: 'coordinator', id: 'c1', token: listenerToken }, HANDSHAKE_MS),
  );
  dialer.send(kind, meta);
  const errorFrame = await dialer.receive(HANDSHAKE_MS, 'the refusal');
  assert.equal(listener.ready, false);
  return {
    accepted: await accepted,
    errorFrame,
    listenerClose: await listenerClosed,
    dialerClose: await dialerClosed,
  };
}

// ---------------------------------------------------------------------------------------------
// handshake

test(
  'rpc - handshake with matching tokens makes both sides ready and exchanges identities',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    assert.equal(dialer.ready, false);
    assert.equal(listener.ready, false);
    const [ack, helloMeta] = await Promise.all([
      dialHandshake(dialer, { role: 'worker', id: 'w1', token: 's3cret' }, HANDSHAKE_MS),
      acceptHandshake(listener, { role: 'coordinator', id: 'c1', token: 's3cret' }, HANDSHAKE_MS),
    ]);
    assert.deepEqual(ack, { protocolVersion: PROTOCOL_VERSION, role: 'coordinator', id: 'c1' });
    assert.deepEqual(helloMeta, {
      magic: PROTOCOL_MAGIC,
      protocolVersion: PROTOCOL_VERSION,
      role: 'worker',
      id: 'w1',
      token: 's3cret',
    });
    assert.equal(dialer.ready, true);
    assert.equal(listener.ready, true);

    // and the connection carries requests both ways
    listener.setRequestHandler((req) => req.reply(MESSAGE_KIND.INFER_RESPONSE, { from: 'listener' }));
    dialer.setRequestHandler((req) => req.reply(MESSAGE_KIND.INFER_RESPONSE, { from: 'dialer' }));
    const [a, b] = await Promise.all([
      dialer.request(MESSAGE_KIND.INFER_REQUEST, {}),
      listener.request(MESSAGE_KIND.INFER_REQUEST, {}),
    ]);
    assert.deepEqual(a.meta, { from: 'listener' });
    assert.deepEqual(b.meta, { from: 'dialer' });
  },
);

test('rpc - a listener without a token accepts dialers with or without one', TIMEOUT, async (t) => {
  for (const token of ['unneeded', undefined]) {
    const { dialer, listener } = await connectPair(t);
    const [, helloMeta] = await Promise.all([
      dialHandshake(dialer, { role: 'worker', id: `w-${token}`, token }, HANDSHAKE_MS),
      acceptHandshake(listener, { role: 'coordinator', id: 'c1' }, HANDSHAKE_MS),
    ]);
    assert.equal(helloMeta.id, `w-${token}`);
    assert.equal(dialer.ready && listener.ready, true);
  }
});

for (const [name, dialerToken, message] of [
  ['a wrong token', 'guess', /presented a wrong auth token/],
  ['no token', undefined, /presented no auth token/],
  ['an empty token', '', /presented no auth token/],
] as const) {
  test(`rpc - a dialer with ${name} is refused with AUTH_FAILED`, TIMEOUT, async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);
    const dialed = outcome(
      dialHandshake(dialer, { role: 'worker', id: 'w1', token: dialerToken }, HANDSHAKE_MS),
    );
    const accepted = outcome(
      acceptHandshake(listener, { role: 'coordinator', id: 'c1', token: 's3cret' }, HANDSHAKE_MS),
    );

    const err = await dialed;
    assertCode(err, 'AUTH_FAILED', message);
    assert.match(err.message, /worker "w1"/);
    assert.equal(err.retryable, false);
    assertCode(await accepted, 'AUTH_FAILED', message);
    assertCode(await dialerClosed, 'AUTH_FAILED');
    assertCode(await listenerClosed, 'AUTH_FAILED');
    assert.equal(dialer.ready, false);
    assert.equal(listener.ready, false);
    assert.equal(dialer.closed && listener.closed, true);
  });
}

test('rpc - a HELLO with another protocol version is refused with VERSION_MISMATCH', TIMEOUT, async (t) => {
  const seen = await refusedHello(t, MESSAGE_KIND.HELLO, hello({ protocolVersion: PROTOCOL_VERSION + 1 }));
  assertCode(
    seen.accepted,
    'VERSION_MISMATCH',
    new RegExp(
      `peer speaks protocol version ${PROTOCOL_VERSION + 1}, this coordinator speaks ${PROTOCOL_VERSION}`,
    ),
  );
  assertErrorFrame(seen.errorFrame, 'VERSION_MISMATCH');
  assertCode(seen.listenerClose, 'VERSION_MISMATCH');
  assertCode(seen.dialerClose, 'CONNECTION_LOST');
});

test('rpc - a HELLO with bad magic is refused with PROTOCOL_ERROR', TIMEOUT, async (t) => {
  const seen = await refusedHello(t, MESSAGE_KIND.HELLO, hello({ magic: 'http/1.1' }));
  assertCode(seen.accepted, 'PROTOCOL_ERROR', /bad magic/);
  assertErrorFrame(seen.errorFrame, 'PROTOCOL_ERROR');
  assertCode(seen.listenerClose, 'PROTOCOL_ERROR');
});

test('rpc - a malformed HELLO is refused with PROTOCOL_ERROR', TIMEOUT, async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ id: undefined }, /missing id/],
    [{ role: 'admin' }, /role must be coordinator or worker/],
    [{ protocolVersion: '1' }, /missing protocolVersion/],
    [{ token: 42 }, /token must be a string/],
  ];
  for (const [overrides, message] of cases) {
    const seen = await refusedHello(t, MESSAGE_KIND.HELLO, hello(overrides), 's3cret');
    assertCode(seen.accepted, 'PROTOCOL_ERROR', message);
    assertErrorFrame(seen.errorFrame, 'PROTOCOL_ERROR');
  }
});

test('rpc - a first message other than HELLO is refused with PROTOCOL_ERROR', TIMEOUT, async (t) => {
  const seen = await refusedHello(t, MESSAGE_KIND.HELLO_ACK, {
    protocolVersion: PROTOCOL_VERSION,
    role: 'worker',
    id: 'w1',
  });
  assertCode(seen.accepted, 'PROTOCOL_ERROR', /expected HELLO, got HELLO_ACK/);
  assertErrorFrame(seen.errorFrame, 'PROTOCOL_ERROR');
});

test(
  'rpc - a silent dialer is closed by the listener after handshakeTimeoutMs with DEADLINE_EXCEEDED',
  TIMEOUT,
  async (t) => {
    const server = await startServer(t);
    // a raw TCP client that connects and never says anything
    const frames: Frame[] = [];
    const { errors: rawErrors, closed: rawClosed } = rawClient(t, server.port, (frame) => frames.push(frame));

    const listener = new RpcConnection(await server.nextSocket(), { ...QUIET, side: 'listener' });
    t.after(() => listener.close());
    const listenerClosed = nextClose(listener);
    const accepted = outcome(acceptHandshake(listener, { role: 'coordinator', id: 'c1' }, 100));

    assertCode(await accepted, 'DEADLINE_EXCEEDED', /no HELLO from 127\.0\.0\.1:\d+ within 100 ms/);
    assertCode(await listenerClosed, 'DEADLINE_EXCEEDED');
    await rawClosed;
    // the silent peer was told why before the connection went
    assert.equal(frames.length, 1);
    assertErrorFrame(frames[0]!, 'DEADLINE_EXCEEDED');
    assert.deepEqual(rawErrors, []);
  },
);

test(
  'rpc - a listener that never answers HELLO fails dialHandshake with DEADLINE_EXCEEDED',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);
    const dialed = outcome(dialHandshake(dialer, { role: 'worker', id: 'w1' }, 100));

    assertCode(await dialed, 'DEADLINE_EXCEEDED', /no HELLO_ACK from/);
    assertCode(await dialerClosed, 'DEADLINE_EXCEEDED');
    // the listener got the HELLO, then the dialer's reason for leaving
    const first = await listener.receive(HANDSHAKE_MS, 'HELLO');
    assert.equal(first.kind, MESSAGE_KIND.HELLO);
    assertErrorFrame(await listener.receive(HANDSHAKE_MS, 'ERROR'), 'DEADLINE_EXCEEDED');
    assertCode(await listenerClosed, 'CONNECTION_LOST');
    assert.equal(dialer.ready, false);
  },
);

test(
  'rpc - a listener that answers HELLO with something other than HELLO_ACK fails with PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const dialed = outcome(dialHandshake(dialer, { role: 'worker', id: 'w1' }, HANDSHAKE_MS));
    const got = await listener.receive(HANDSHAKE_MS, 'HELLO');
    assert.equal(got.kind, MESSAGE_KIND.HELLO);
    listener.send(MESSAGE_KIND.HELLO, hello({ role: 'coordinator', id: 'c1' }));

    assertCode(await dialed, 'PROTOCOL_ERROR', /expected HELLO_ACK, got HELLO/);
    assertCode(await dialerClosed, 'PROTOCOL_ERROR');
    assertErrorFrame(await listener.receive(HANDSHAKE_MS, 'ERROR'), 'PROTOCOL_ERROR');
    assert.equal(dialer.ready, false);
  },
);

test('rpc - a malformed HELLO_ACK fails dialHandshake with PROTOCOL_ERROR', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectPair(t);
  const dialed = outcome(dialHandshake(dialer, { role: 'worker', id: 'w1' }, HANDSHAKE_MS));
  await listener.receive(HANDSHAKE_MS, 'HELLO');
  listener.send(MESSAGE_KIND.HELLO_ACK, { protocolVersion: PROTOCOL_VERSION, role: 'coordinator' });
  assertCode(await dialed, 'PROTOCOL_ERROR', /HELLO_ACK: expected/);
  assert.equal(dialer.ready, false);
});

test('rpc - a malformed HELLO_ACK also closes the connection, like every other handshake failure', {
  ...TIMEOUT,
}, async (t) => {
  const { dialer, listener } = await connectPair(t);
  const dialed = outcome(dialHandshake(dialer, { role: 'worker', id: 'w1' }, HANDSHAKE_MS));
  await listener.receive(HANDSHAKE_MS, 'HELLO');
  listener.send(MESSAGE_KIND.HELLO_ACK, { protocolVersion: PROTOCOL_VERSION, role: 'coordinator' });
  assertCode(await dialed, 'PROTOCOL_ERROR');
  assert.equal(dialer.closed, true, 'the dialer should close the connection it refused');
});

test('rpc - a message the listener sends right after HELLO_ACK reaches the dialer', TIMEOUT, async (t) => {
  // what a worker does when a coordinator dials it: acceptHandshake, then REGISTER at once, so
  // HELLO_ACK and REGISTER reach the dialer in one chunk, before dialHandshake has resumed
  const { dialer, listener } = await connectPair(t);
  const closeReason = nextClose(dialer);
  const dialed = outcome(dialHandshake(dialer, { role: 'coordinator', id: 'c1' }, HANDSHAKE_MS));
  await acceptHandshake(listener, { role: 'worker', id: 'w1' }, HANDSHAKE_MS);
  listener.send(MESSAGE_KIND.REGISTER, { workerId: 'w1', models: [] });
  listener.send(MESSAGE_KIND.DRAIN, { reason: 'test' });
  const served = listener.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 });

  assert.equal(await dialed, undefined, 'dialHandshake should succeed');
  const register = await dialer
    .receive(HANDSHAKE_MS, 'REGISTER')
    .catch(async () => assert.fail(`the dialer closed: ${(await closeReason)?.message}`));
  assert.equal(register.kind, MESSAGE_KIND.REGISTER);
  const drain = await dialer.receive(HANDSHAKE_MS, 'DRAIN');
  assert.equal(drain.kind, MESSAGE_KIND.DRAIN);
  dialer.setRequestHandler((req) => req.reply(MESSAGE_KIND.INFER_RESPONSE, { echo: req.meta }));
  assert.deepEqual((await served).meta, { echo: { n: 1 } });
  assert.equal(dialer.closed, false);
});

test(
  'rpc - a request pipelined behind HELLO is served only once the handshake has accepted the dialer',
  TIMEOUT,
  async (t) => {
    for (const [token, accepted] of [
      ['s3cret', true],
      ['guess', false],
    ] as const) {
      const { dialer, listener } = await connectPair(t);
      let served = 0;
      listener.setRequestHandler((req) => {
        served++;
        req.reply(MESSAGE_KIND.INFER_RESPONSE, { echo: req.meta });
      });
      // HELLO and the request leave in the same write, before any HELLO_ACK
      const dialed = outcome(dialHandshake(dialer, { role: 'worker', id: 'w1', token }, HANDSHAKE_MS));
      const call = outcome(dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }));
      const accept = outcome(
        acceptHandshake(listener, { role: 'coordinator', id: 'c1', token: 's3cret' }, HANDSHAKE_MS),
      );
      if (accepted) {
        assert.equal(await accept, undefined);
        assert.equal(await dialed, undefined);
        assert.equal(await call, undefined);
        assert.equal(served, 1);
      } else {
        assertCode(await accept, 'AUTH_FAILED');
        assertCode(await dialed, 'AUTH_FAILED');
        assertCode(await call, 'CONNECTION_LOST');
        assert.equal(served, 0, 'a refused dialer must not get its request served');
      }
    }
  },
);

// ---------------------------------------------------------------------------------------------
// dial

test('rpc - dial to a port nobody listens on rejects with CONNECTION_LOST', TIMEOUT, async (t) => {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  let leaked: RpcConnection | undefined;
  t.after(() => leaked?.close());
  await assert.rejects(
    dial({ host: '127.0.0.1', port }, QUIET, 5000).then((conn) => {
      leaked = conn;
    }),
    isCode('CONNECTION_LOST', new RegExp(`could not connect to 127\\.0\\.0\\.1:${port}`)),
  );
});

// ---------------------------------------------------------------------------------------------
// Redialer

/** A server that runs acceptHandshake on every connection and hands the ready ones out in order. */
async function handshakingServer(t: TestContext, token?: string) {
  const ready: RpcConnection[] = [];
  const waiting: Deferred<RpcConnection>[] = [];
  const refused: unknown[] = [];
  const server = await startServer(t, (socket) => {
    const conn = new RpcConnection(socket, { ...QUIET, side: 'listener' });
    t.after(() => conn.close());
    acceptHandshake(conn, { role: 'coordinator', id: 'c1', token }, HANDSHAKE_MS).then(
      () => {
        ready.push(conn);
        waiting[ready.length - 1]?.resolve(conn);
      },
      (err: unknown) => refused.push(err),
    );
  });
  return {
    port: server.port,
    ready,
    refused,
    /** The n-th (0-based) connection to complete the handshake. */
    nth: (n: number): Promise<RpcConnection> => {
      if (ready[n]) return Promise.resolve(ready[n]);
      waiting[n] ??= deferred<RpcConnection>();
      return waiting[n].promise;
    },
  };
}

test(
  'rpc - a Redialer reconnects after the server closes the connection and stops after stop()',
  TIMEOUT,
  async (t) => {
    const server = await handshakingServer(t);
    let dials = 0;
    let setups = 0;
    const setupDone = [deferred<RpcConnection>(), deferred<RpcConnection>()];
    const redialer = new Redialer({
      label: 'test-server',
      dial: () => {
        dials++;
        return dial({ host: '127.0.0.1', port: server.port }, QUIET, 5000);
      },
      setup: async (conn) => {
        await dialHandshake(conn, { role: 'worker', id: 'w1' }, HANDSHAKE_MS);
        setupDone[setups++]?.resolve(conn);
      },
      backoff: { initialDelayMs: 5, maxDelayMs: 20 },
      logger: silentLogger(),
    });
    t.after(() => redialer.stop());
    redialer.start();
    redialer.start(); // idempotent: still one loop

    const first = await setupDone[0]!.promise;
    const firstAtServer = await server.nth(0);
    assert.equal(first.ready, true);
    firstAtServer.close(new InfergridError('CONNECTION_LOST', 'server restarting'), true);

    const second = await setupDone[1]!.promise;
    const secondAtServer = await server.nth(1);
    assert.equal(setups, 2);
    assert.equal(dials, 2);
    assert.equal(first.closed, true);
    assert.notEqual(second, first);
    assert.equal(second.ready, true);

    const closedAtServer = nextClose(secondAtServer);
    const stopped = redialer.stop();
    assertCode(await closedAtServer, 'CONNECTION_LOST');
    assert.equal(second.closed, true);

    // stop() resolves when the dial loop has exited, so no dial can follow
    await stopped;
    assert.equal(dials, 2);
    assert.equal(setups, 2);
    assert.equal(server.ready.length, 2);
    assert.equal(redialer.connection, undefined);
  },
);

test('rpc - a Redialer keeps retrying failed dials and setups until one succeeds', TIMEOUT, async (t) => {
  const server = await handshakingServer(t, 's3cret');
  let attempts = 0;
  const up = deferred<RpcConnection>();
  const failures: string[] = [];
  const redialer = new Redialer({
    label: 'flaky',
    dial: () => {
      attempts++;
      // attempt 1: nobody there; attempt 2: wrong token; attempt 3: right token
      if (attempts === 1) return Promise.reject(new InfergridError('CONNECTION_LOST', 'refused'));
      return dial({ host: '127.0.0.1', port: server.port }, QUIET, 5000);
    },
    setup: async (conn) => {
      try {
        await dialHandshake(
          conn,
          { role: 'worker', id: 'w1', token: attempts === 2 ? 'wrong' : 's3cret' },
          HANDSHAKE_MS,
        );
      } catch (err) {
        failures.push((err as InfergridError).code);
        throw err;
      }
      up.resolve(conn);
    },
    backoff: { initialDelayMs: 5, maxDelayMs: 20 },
    logger: silentLogger(),
  });
  t.after(() => redialer.stop());
  redialer.start();

  const conn = await up.promise;
  assert.equal(attempts, 3);
  assert.deepEqual(failures, ['AUTH_FAILED']);
  assert.equal(server.refused.length, 1);
  assertCode(server.refused[0], 'AUTH_FAILED');
  assert.equal(conn.ready, true);
  await new Promise((resolve) => setImmediate(resolve)); // let the Redialer's loop take the connection
  assert.equal(redialer.connection, conn);
});

test('rpc - a Redialer stopped while a connection is being set up closes that connection', {
  ...TIMEOUT,
}, async (t) => {
  const server = await startServer(t); // accepts and holds sockets; setup here needs no peer
  const entered = deferred<RpcConnection>();
  const release = deferred<void>();
  const redialer = new Redialer({
    label: 'slow-setup',
    dial: () => dial({ host: '127.0.0.1', port: server.port }, QUIET, 5000),
    setup: async (conn) => {
      entered.resolve(conn);
      await release.promise;
    },
    backoff: { initialDelayMs: 5, maxDelayMs: 20 },
    logger: silentLogger(),
  });
  t.after(() => redialer.stop());
  redialer.start();
  const conn = await entered.promise;
  t.after(() => conn.close());

  const stopped = redialer.stop();
  release.resolve();
  // the loop exits only after it has dealt with the connection it was setting up
  await stopped;
  assert.equal(conn.closed, true, 'the connection set up after stop() is still open');
  assert.equal(redialer.connection, undefined);
});
