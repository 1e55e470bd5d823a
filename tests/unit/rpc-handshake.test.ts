/**
 * The RPC handshake (HELLO, CHALLENGE, PROOF, HELLO_ACK or a refusal), dial() and the Redialer, over real TCP
 * sockets on loopback. Tests wait on events and promises; timeouts handed to the code under
 * test are small, the overall per-test timeout generous.
 */

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { type AddressInfo, createServer } from 'node:net';
import { type TestContext, test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  type ChallengeMeta,
  type Frame,
  FrameDecoder,
  MESSAGE_KIND,
  NONCE_BYTES,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  createPackr,
} from '../../src/protocol/index.ts';
import {
  type HandshakeIdentity,
  Redialer,
  RpcConnection,
  acceptHandshake,
  clusterCredentials,
  deriveWorkerKey,
  dial,
  dialHandshake,
  workerCredentials,
} from '../../src/rpc/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { type Deferred, deferred } from '../../src/util/deferred.ts';
import { assertCode, isCode } from '../fixtures/assert.ts';
import {
  MAX_FRAME_BYTES,
  QUIET,
  TIMEOUT,
  connectPair,
  nextClose,
  rawClient,
  startServer,
} from '../fixtures/rpc.ts';

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

const SECRET = 'cluster-s3cret';
/** null: no credentials (--insecure). */
const coordinatorSide = (secret: string | null = SECRET): HandshakeIdentity => ({
  role: 'coordinator',
  id: 'c1',
  credentials: secret === null ? undefined : clusterCredentials(secret),
});
const workerSide = (id = 'w1', key: Buffer | null = deriveWorkerKey(SECRET, id)): HandshakeIdentity => ({
  role: 'worker',
  id,
  credentials: key === null ? undefined : workerCredentials(id, key),
});

const hello = (overrides: Record<string, unknown> = {}) => ({
  magic: PROTOCOL_MAGIC,
  protocolVersion: PROTOCOL_VERSION,
  role: 'worker',
  id: 'w1',
  nonce: randomBytes(NONCE_BYTES),
  ...overrides,
});

/** Every frame that arrives on `conn`'s socket, decoded on the side, whatever the connection does with it. */
function tapFrames(conn: RpcConnection): { frames: Frame[]; bytes: Buffer[] } {
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, packr: createPackr() });
  const tapped = { frames: [] as Frame[], bytes: [] as Buffer[] };
  conn.socket.on('data', (chunk: Buffer) => {
    tapped.bytes.push(chunk);
    tapped.frames.push(...decoder.push(chunk));
  });
  return tapped;
}

/**
 * Runs a listener's acceptHandshake against a dialer that sends `meta` as its HELLO (or the
 * given kind) by hand, and returns what each side saw.
 */
async function refusedHello(
  t: TestContext,
  kind: number,
  meta: unknown,
  listener_: HandshakeIdentity = coordinatorSide(),
): Promise<{ accepted: unknown; errorFrame: Frame; listenerClose: unknown; dialerClose: unknown }> {
  const { dialer, listener } = await connectPair(t);
  const listenerClosed = nextClose(listener);
  const dialerClosed = nextClose(dialer);
  const accepted = outcome(acceptHandshake(listener, listener_, HANDSHAKE_MS));
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

/**
 * A dialer that speaks the handshake by hand: sends `helloMeta`, takes the CHALLENGE, sends
 * what `proofFor` makes of it as PROOF, and returns the listener's answer and its outcome.
 */
async function handRolledDialer(
  t: TestContext,
  listenerSide: HandshakeIdentity,
  helloMeta: unknown,
  proofFor: (challenge: ChallengeMeta) => unknown,
): Promise<{ answer: Frame; accepted: unknown }> {
  const { dialer, listener } = await connectPair(t);
  const accepted = outcome(acceptHandshake(listener, listenerSide, HANDSHAKE_MS));
  dialer.send(MESSAGE_KIND.HELLO, helloMeta);
  const challenge = await dialer.receive(HANDSHAKE_MS, 'CHALLENGE');
  assert.equal(challenge.kind, MESSAGE_KIND.CHALLENGE);
  dialer.send(MESSAGE_KIND.PROOF, proofFor(challenge.meta as ChallengeMeta));
  const answer = await dialer.receive(HANDSHAKE_MS, 'the answer');
  return { answer, accepted: await accepted };
}

// ---------------------------------------------------------------------------------------------
// handshake

test(
  'rpc - handshake with matching keys makes both sides ready and exchanges identities',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    assert.equal(dialer.ready, false);
    assert.equal(listener.ready, false);
    const [ack, helloMeta] = await Promise.all([
      dialHandshake(dialer, workerSide(), HANDSHAKE_MS),
      acceptHandshake(listener, coordinatorSide(), HANDSHAKE_MS),
    ]);
    assert.deepEqual(ack, { protocolVersion: PROTOCOL_VERSION, role: 'coordinator', id: 'c1' });
    assert.equal(helloMeta.role, 'worker');
    assert.equal(helloMeta.id, 'w1');
    assert.equal(helloMeta.nonce.byteLength, NONCE_BYTES);
    assert.equal('token' in helloMeta, false);
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

test(
  "rpc - a coordinator dialing a worker keys the connection with the worker's id from its CHALLENGE",
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const [ack, helloMeta] = await Promise.all([
      dialHandshake(dialer, coordinatorSide(), HANDSHAKE_MS),
      acceptHandshake(listener, workerSide('w7'), HANDSHAKE_MS),
    ]);
    assert.equal(ack.id, 'w7');
    assert.equal(helloMeta.role, 'coordinator');
    assert.equal(dialer.ready && listener.ready, true);
  },
);

test('rpc - two sides without credentials (--insecure) accept each other', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectPair(t);
  await Promise.all([
    dialHandshake(dialer, workerSide('w1', null), HANDSHAKE_MS),
    acceptHandshake(listener, coordinatorSide(null), HANDSHAKE_MS),
  ]);
  assert.equal(dialer.ready && listener.ready, true);
});

for (const [name, dialerSide, listenerSide] of [
  [
    'a worker with a wrong key dialing a coordinator',
    workerSide('w1', deriveWorkerKey('guess', 'w1')),
    coordinatorSide(),
  ],
  [
    "a worker with another worker's key dialing a coordinator",
    workerSide('w1', deriveWorkerKey(SECRET, 'w2')),
    coordinatorSide(),
  ],
  ['a coordinator with a wrong secret dialing a worker', coordinatorSide('guess'), workerSide()],
  ['a worker dialing a coordinator with a wrong secret', workerSide(), coordinatorSide('guess')],
] as const) {
  test(`rpc - ${name} is refused with AUTH_FAILED on both sides`, TIMEOUT, async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);
    const dialed = outcome(dialHandshake(dialer, dialerSide, HANDSHAKE_MS));
    const accepted = outcome(acceptHandshake(listener, listenerSide, HANDSHAKE_MS));

    const err = await dialed;
    assertCode(err, 'AUTH_FAILED', /proved a different key for worker "w1"/);
    assert.match(err.message, /infergrid credential --worker w1/);
    assert.equal(err.retryable, false);
    assertCode(await accepted, 'AUTH_FAILED');
    assertCode(await dialerClosed, 'AUTH_FAILED');
    assertCode(await listenerClosed, 'AUTH_FAILED');
    assert.equal(dialer.ready || listener.ready, false);
    assert.equal(dialer.closed && listener.closed, true);
  });
}

test('rpc - a listener refuses a dialer whose PROOF is wrong or missing', TIMEOUT, async (t) => {
  for (const [proof, message] of [
    [{ proof: randomBytes(32) }, /worker "w1" at .* proved a different key/],
    [{}, /worker "w1" at .* presented no credentials/],
  ] as const) {
    const { answer, accepted } = await handRolledDialer(t, coordinatorSide(), hello(), () => proof);
    assertErrorFrame(answer, 'AUTH_FAILED');
    assertCode(accepted, 'AUTH_FAILED', message);
  }
});

test(
  'rpc - a dialer with credentials refuses a listener that proves nothing (--insecure)',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialed = outcome(dialHandshake(dialer, workerSide(), HANDSHAKE_MS));
    const accepted = outcome(acceptHandshake(listener, coordinatorSide(null), HANDSHAKE_MS));
    assertCode(await dialed, 'AUTH_FAILED', /coordinator "c1" at .* presented no credentials/);
    assertCode(await accepted, 'AUTH_FAILED');
    assert.equal(listener.ready, false);
  },
);

test(
  'rpc - a HELLO and PROOF recorded from a good handshake are refused on a fresh connection',
  TIMEOUT,
  async (t) => {
    // a real worker's handshake, with everything it sends recorded on the wire
    const first = await connectPair(t);
    const recorded = tapFrames(first.listener);
    await Promise.all([
      dialHandshake(first.dialer, workerSide(), HANDSHAKE_MS),
      acceptHandshake(first.listener, coordinatorSide(), HANDSHAKE_MS),
    ]);
    const helloFrame = recorded.frames.find((f) => f.kind === MESSAGE_KIND.HELLO)!;
    const proofFrame = recorded.frames.find((f) => f.kind === MESSAGE_KIND.PROOF)!;
    assert.ok(helloFrame && proofFrame);

    // replayed: the listener's fresh nonce makes the old proof worthless
    const { answer, accepted } = await handRolledDialer(
      t,
      coordinatorSide(),
      helloFrame.meta,
      () => proofFrame.meta,
    );
    assertErrorFrame(answer, 'AUTH_FAILED');
    assertCode(accepted, 'AUTH_FAILED', /proved a different key/);
  },
);

test("rpc - a listener's own proof reflected back as the dialer's PROOF is refused", TIMEOUT, async (t) => {
  // a "coordinator" without the key dials a worker and hands the worker's proof back to it
  const { answer, accepted } = await handRolledDialer(
    t,
    workerSide(),
    hello({ role: 'coordinator', id: 'c1' }),
    (challenge) => ({ proof: challenge.proof }),
  );
  assertErrorFrame(answer, 'AUTH_FAILED');
  assertCode(accepted, 'AUTH_FAILED', /coordinator "c1" at .* proved a different key for worker "w1"/);
});

test(
  'rpc - neither the cluster secret nor a worker key appears in any byte of a handshake',
  TIMEOUT,
  async (t) => {
    const key = deriveWorkerKey(SECRET, 'w1');
    const needles = [
      Buffer.from(SECRET),
      key,
      Buffer.from(key.toString('hex')),
      Buffer.from(key.toString('base64')),
    ];
    const cases: [HandshakeIdentity, HandshakeIdentity][] = [
      [workerSide(), coordinatorSide()], // accepted
      [coordinatorSide(), workerSide()], // accepted, the other way round
      [workerSide('w1', deriveWorkerKey('guess', 'w1')), coordinatorSide()], // refused
    ];
    for (const [dialerSide, listenerSide] of cases) {
      const { dialer, listener } = await connectPair(t);
      const toListener = tapFrames(listener);
      const toDialer = tapFrames(dialer);
      await Promise.all([
        outcome(dialHandshake(dialer, dialerSide, HANDSHAKE_MS)),
        outcome(acceptHandshake(listener, listenerSide, HANDSHAKE_MS)),
      ]);
      const wire = Buffer.concat([...toListener.bytes, ...toDialer.bytes]);
      assert.ok(toListener.frames.length >= 1 && toDialer.frames.length >= 1);
      for (const needle of needles) assert.equal(wire.indexOf(needle), -1, 'a secret went over the wire');
    }
  },
);

test(
  'rpc - a HELLO of an older or newer protocol version is refused with VERSION_MISMATCH',
  TIMEOUT,
  async (t) => {
    // what a version-1 worker sends: no nonce, a token instead
    const v1 = { magic: PROTOCOL_MAGIC, protocolVersion: 1, role: 'worker', id: 'w1', token: SECRET };
    const older = await refusedHello(t, MESSAGE_KIND.HELLO, v1);
    assertCode(
      older.accepted,
      'VERSION_MISMATCH',
      new RegExp(
        `peer speaks protocol version 1, this coordinator speaks ${PROTOCOL_VERSION}; upgrade the worker`,
      ),
    );
    assertErrorFrame(older.errorFrame, 'VERSION_MISMATCH');
    assertCode(older.listenerClose, 'VERSION_MISMATCH');
    assertCode(older.dialerClose, 'CONNECTION_LOST');

    const newer = await refusedHello(t, MESSAGE_KIND.HELLO, hello({ protocolVersion: PROTOCOL_VERSION + 1 }));
    assertCode(
      newer.accepted,
      'VERSION_MISMATCH',
      new RegExp(
        `peer speaks protocol version ${PROTOCOL_VERSION + 1}, this coordinator speaks ${PROTOCOL_VERSION}; upgrade the coordinator`,
      ),
    );
  },
);

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
    [{ protocolVersion: '2' }, /missing protocolVersion/],
    [{ nonce: undefined }, /nonce must be 32 bytes/],
    [{ nonce: randomBytes(8) }, /nonce must be 32 bytes/],
    [{ nonce: 'x'.repeat(32) }, /nonce must be 32 bytes/],
  ];
  for (const [overrides, message] of cases) {
    const seen = await refusedHello(t, MESSAGE_KIND.HELLO, hello(overrides));
    assertCode(seen.accepted, 'PROTOCOL_ERROR', message);
    assertErrorFrame(seen.errorFrame, 'PROTOCOL_ERROR');
  }
});

test('rpc - a peer of the same role is refused with PROTOCOL_ERROR', TIMEOUT, async (t) => {
  const seen = await refusedHello(t, MESSAGE_KIND.HELLO, hello({ role: 'coordinator', id: 'c2' }));
  assertCode(
    seen.accepted,
    'PROTOCOL_ERROR',
    /a coordinator talks to workers only; coordinator "c2" connected/,
  );
  assertErrorFrame(seen.errorFrame, 'PROTOCOL_ERROR');
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
    const accepted = outcome(acceptHandshake(listener, coordinatorSide(), 100));

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
  'rpc - a dialer that never sends PROOF is closed within the same handshake budget',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const accepted = outcome(acceptHandshake(listener, coordinatorSide(), 100));
    dialer.send(MESSAGE_KIND.HELLO, hello());
    assertCode(await accepted, 'DEADLINE_EXCEEDED', /no PROOF from/);
    assert.equal(listener.ready, false);
  },
);

test(
  'rpc - a listener that never answers HELLO fails dialHandshake with DEADLINE_EXCEEDED',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);
    const dialed = outcome(dialHandshake(dialer, workerSide(), 100));

    assertCode(await dialed, 'DEADLINE_EXCEEDED', /no CHALLENGE from/);
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
  'rpc - a listener that answers HELLO with something other than CHALLENGE fails with PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectPair(t);
    const dialerClosed = nextClose(dialer);
    const dialed = outcome(dialHandshake(dialer, workerSide(), HANDSHAKE_MS));
    const got = await listener.receive(HANDSHAKE_MS, 'HELLO');
    assert.equal(got.kind, MESSAGE_KIND.HELLO);
    listener.send(MESSAGE_KIND.HELLO_ACK, {
      protocolVersion: PROTOCOL_VERSION,
      role: 'coordinator',
      id: 'c1',
    });

    assertCode(await dialed, 'PROTOCOL_ERROR', /expected CHALLENGE, got HELLO_ACK/);
    assertCode(await dialerClosed, 'PROTOCOL_ERROR');
    assertErrorFrame(await listener.receive(HANDSHAKE_MS, 'ERROR'), 'PROTOCOL_ERROR');
    assert.equal(dialer.ready, false);
  },
);

test('rpc - a malformed CHALLENGE fails dialHandshake with PROTOCOL_ERROR and closes', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectPair(t);
  const dialed = outcome(dialHandshake(dialer, workerSide(), HANDSHAKE_MS));
  await listener.receive(HANDSHAKE_MS, 'HELLO');
  listener.send(MESSAGE_KIND.CHALLENGE, { protocolVersion: PROTOCOL_VERSION, role: 'coordinator', id: 'c1' });
  assertCode(await dialed, 'PROTOCOL_ERROR', /CHALLENGE: nonce must be 32 bytes/);
  assert.equal(dialer.ready, false);
  assert.equal(dialer.closed, true, 'the dialer should close the connection it refused');
});

test('rpc - a message the listener sends right after HELLO_ACK reaches the dialer', TIMEOUT, async (t) => {
  // what a worker does when a coordinator dials it: acceptHandshake, then REGISTER at once, so
  // HELLO_ACK and REGISTER reach the dialer in one chunk, before dialHandshake has resumed
  const { dialer, listener } = await connectPair(t);
  const closeReason = nextClose(dialer);
  const dialed = outcome(dialHandshake(dialer, coordinatorSide(), HANDSHAKE_MS));
  await acceptHandshake(listener, workerSide(), HANDSHAKE_MS);
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
    for (const [key, accepted] of [
      [deriveWorkerKey(SECRET, 'w1'), true],
      [deriveWorkerKey('guess', 'w1'), false],
    ] as const) {
      const { dialer, listener } = await connectPair(t);
      let served = 0;
      listener.setRequestHandler((req) => {
        served++;
        req.reply(MESSAGE_KIND.INFER_RESPONSE, { echo: req.meta });
      });
      // HELLO and the request leave in the same write, before any CHALLENGE
      const dialed = outcome(dialHandshake(dialer, workerSide('w1', key), HANDSHAKE_MS));
      const call = outcome(dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }));
      const accept = outcome(acceptHandshake(listener, coordinatorSide(), HANDSHAKE_MS));
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
async function handshakingServer(t: TestContext, listenerSide: HandshakeIdentity = coordinatorSide()) {
  const ready: RpcConnection[] = [];
  const waiting: Deferred<RpcConnection>[] = [];
  const refused: unknown[] = [];
  const server = await startServer(t, (socket) => {
    const conn = new RpcConnection(socket, { ...QUIET, side: 'listener' });
    t.after(() => conn.close());
    acceptHandshake(conn, listenerSide, HANDSHAKE_MS).then(
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
        await dialHandshake(conn, workerSide(), HANDSHAKE_MS);
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
  const server = await handshakingServer(t);
  let attempts = 0;
  const up = deferred<RpcConnection>();
  const failures: string[] = [];
  const redialer = new Redialer({
    label: 'flaky',
    dial: () => {
      attempts++;
      // attempt 1: nobody there; attempt 2: wrong key; attempt 3: right key
      if (attempts === 1) return Promise.reject(new InfergridError('CONNECTION_LOST', 'refused'));
      return dial({ host: '127.0.0.1', port: server.port }, QUIET, 5000);
    },
    setup: async (conn) => {
      try {
        await dialHandshake(
          conn,
          workerSide('w1', deriveWorkerKey(attempts === 2 ? 'wrong' : SECRET, 'w1')),
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
