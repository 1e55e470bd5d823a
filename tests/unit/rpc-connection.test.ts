/**
 * RpcConnection over real TCP sockets on loopback: request multiplexing, deadlines,
 * cancellation, streaming, errors, lost connections, heartbeats and the watchdog, corrupt
 * input, and the connection-level message queue.
 *
 * Every test waits on events and promises, never on elapsed time; the timeouts given to the
 * code under test are small and the overall per-test timeout is generous.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Socket } from 'node:net';
import { test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  FRAME_FLAG,
  type Frame,
  MESSAGE_KIND,
  NONCE_BYTES,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  checkHeartbeat,
  createPackr,
  encodeFrameToBuffer,
} from '../../src/protocol/index.ts';
import { type IncomingRequest, RpcConnection, acceptHandshake } from '../../src/rpc/index.ts';
import { deferred } from '../../src/util/deferred.ts';
import { assertCode, isCode } from '../fixtures/assert.ts';
import {
  MAX_FRAME_BYTES,
  QUIET,
  TIMEOUT,
  connectPair,
  connectReadyPair,
  nextClose,
  rawClient,
  startServer,
} from '../fixtures/rpc.ts';

const packr = createPackr();

// ---------------------------------------------------------------------------------------------
// helpers

/** Collects values and resolves once `n` have arrived. */
function collector<T>(n: number): { items: T[]; push: (item: T) => void; full: Promise<T[]> } {
  const items: T[] = [];
  const done = deferred<T[]>();
  return {
    items,
    push: (item) => {
      items.push(item);
      if (items.length === n) done.resolve(items);
    },
    full: done.promise,
  };
}

/** Resolves with the signal's reason once it is aborted (at once if it already is). */
function whenAborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return once(signal, 'abort').then(() => signal.reason);
}

const text = (bytes: Uint8Array | undefined): string => Buffer.from(bytes ?? []).toString('utf8');

/** Answers every request with `{ echo: meta }` and the attachments reversed in order. */
function echo(req: IncomingRequest): void {
  req.reply(MESSAGE_KIND.INFER_RESPONSE, { echo: req.meta }, [...req.attachments].reverse());
}

/** mulberry32: a seeded PRNG so a shuffled order is the same on every run. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Replaces `to`'s request handler with `echo` and asserts a round trip still works. */
async function assertStillServes(from: RpcConnection, to: RpcConnection, marker: string): Promise<void> {
  to.setRequestHandler(echo);
  const frame = await from.request(MESSAGE_KIND.INFER_REQUEST, { marker }, [Buffer.from(marker)]);
  assert.deepEqual(frame.meta, { echo: { marker } });
  assert.equal(text(frame.attachments[0]), marker);
}

// ---------------------------------------------------------------------------------------------
// multiplexing

for (const order of ['reverse', 'shuffled'] as const) {
  test(
    `rpc - 200 concurrent requests answered in ${order} order each reach their own caller`,
    TIMEOUT,
    async (t) => {
      const N = 200;
      const { dialer, listener } = await connectReadyPair(t);
      const arrived = collector<IncomingRequest>(N);
      listener.setRequestHandler(arrived.push);

      const calls = Array.from({ length: N }, (_, i) =>
        dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: i }, [
          Buffer.from(`in-${i}`),
          Buffer.alloc(i % 7, i),
        ]),
      );
      const incoming = await arrived.full;
      assert.equal(dialer.pendingCount, N);
      assert.equal(listener.incomingCount, N);

      const answerOrder =
        order === 'reverse' ? [...incoming].reverse() : shuffle([...incoming], seededRandom(42));
      for (const [k, req] of answerOrder.entries()) {
        const { n } = req.meta as { n: number };
        req.reply(MESSAGE_KIND.INFER_RESPONSE, { n, saw: text(req.attachments[0]) }, [
          Buffer.from(`out-${n}`),
        ]);
        // spread the shuffled answers over several writes so they arrive in several chunks
        if (order === 'shuffled' && k % 37 === 0) await nextTurn();
      }

      const frames = await Promise.all(calls);
      for (const [i, frame] of frames.entries()) {
        assert.equal(frame.kind, MESSAGE_KIND.INFER_RESPONSE);
        assert.equal(frame.flags & FRAME_FLAG.FINAL, FRAME_FLAG.FINAL);
        assert.deepEqual(frame.meta, { n: i, saw: `in-${i}` });
        assert.equal(text(frame.attachments[0]), `out-${i}`);
      }
      // the listener saw the second attachment intact too
      for (const req of incoming) {
        const { n } = req.meta as { n: number };
        assert.deepEqual([...req.attachments[1]!], new Array(n % 7).fill(n & 0xff));
      }
      assert.equal(dialer.pendingCount, 0);
      assert.equal(listener.incomingCount, 0);
    },
  );
}

test(
  'rpc - requests from both sides at once do not collide: dialer ids are odd, listener ids even',
  TIMEOUT,
  async (t) => {
    const N = 100;
    const { dialer, listener } = await connectReadyPair(t);
    const idsSeenByListener: number[] = [];
    const idsSeenByDialer: number[] = [];
    listener.setRequestHandler((req) => {
      idsSeenByListener.push(req.requestId);
      req.reply(MESSAGE_KIND.INFER_RESPONSE, { answeredBy: 'listener', meta: req.meta });
    });
    dialer.setRequestHandler((req) => {
      idsSeenByDialer.push(req.requestId);
      // answer on a later turn so both sides have many requests pending at once
      setImmediate(() => req.reply(MESSAGE_KIND.INFER_RESPONSE, { answeredBy: 'dialer', meta: req.meta }));
    });

    const fromDialer = Array.from({ length: N }, (_, i) =>
      dialer.request(MESSAGE_KIND.INFER_REQUEST, { from: 'dialer', n: i }),
    );
    const fromListener = Array.from({ length: N }, (_, i) =>
      listener.request(MESSAGE_KIND.INFER_REQUEST, { from: 'listener', n: i }),
    );
    const [dialerAnswers, listenerAnswers] = await Promise.all([
      Promise.all(fromDialer),
      Promise.all(fromListener),
    ]);

    for (const [i, frame] of dialerAnswers.entries()) {
      assert.deepEqual(frame.meta, { answeredBy: 'listener', meta: { from: 'dialer', n: i } });
      assert.equal(frame.requestId, 2 * i + 1);
    }
    for (const [i, frame] of listenerAnswers.entries()) {
      assert.deepEqual(frame.meta, { answeredBy: 'dialer', meta: { from: 'listener', n: i } });
      assert.equal(frame.requestId, 2 * i + 2);
    }
    assert.ok(idsSeenByListener.every((id) => id % 2 === 1));
    assert.ok(idsSeenByDialer.every((id) => id % 2 === 0));
    assert.equal(new Set(idsSeenByListener).size, N);
    assert.equal(new Set(idsSeenByDialer).size, N);
    assert.equal(
      dialer.pendingCount + dialer.incomingCount + listener.pendingCount + listener.incomingCount,
      0,
    );
  },
);

test('rpc - ping is answered by the peer with PONG', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectReadyPair(t);
  const rttFromDialer = await dialer.ping(5000);
  const rttFromListener = await listener.ping(5000);
  assert.ok(rttFromDialer >= 0);
  assert.ok(rttFromListener >= 0);
  assert.equal(dialer.pendingCount + listener.pendingCount, 0);
});

// ---------------------------------------------------------------------------------------------
// deadlines and cancellation

test(
  'rpc - a request past its deadline fails with DEADLINE_EXCEEDED and is cancelled at the peer',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const got = deferred<IncomingRequest>();
    listener.setRequestHandler((req) => got.resolve(req)); // never answered

    const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }, [], { timeoutMs: 50 });
    const req = await got.promise;
    const abortedAtPeer = whenAborted(req.signal);

    await assert.rejects(call, (err) => {
      assertCode(err, 'DEADLINE_EXCEEDED');
      assert.deepEqual(err.details, { timeoutMs: 50 });
      assert.equal(err.retryable, false);
      return true;
    });
    assert.equal(dialer.pendingCount, 0);

    // the CANCEL frame for that request id reached the peer and aborted its signal
    const reason = await abortedAtPeer;
    assertCode(reason, 'CANCELLED');
    assert.equal(listener.incomingCount, 0);

    // a late answer is dropped by the IncomingRequest itself (the request was cancelled) ...
    req.reply(MESSAGE_KIND.INFER_RESPONSE, { late: 'via reply' });
    // ... and one forced onto the wire (a peer that did not see the CANCEL) is ignored by the dialer
    listener.send(MESSAGE_KIND.INFER_RESPONSE, { late: 'partial' }, [], req.requestId, 0);
    listener.send(MESSAGE_KIND.INFER_RESPONSE, { late: 'final' }, [], req.requestId, FRAME_FLAG.FINAL);
    listener.send(
      MESSAGE_KIND.ERROR,
      { code: 'BACKEND_ERROR', message: 'late' },
      [],
      req.requestId,
      FRAME_FLAG.FINAL,
    );
    // frames are processed in order: once this round trip completes, the late ones have been seen
    await assertStillServes(dialer, listener, 'after-late-answer');
    assert.equal(dialer.closed, false);
    assert.equal(dialer.pendingCount, 0);
  },
);

test(
  'rpc - aborting the signal fails the request with CANCELLED and aborts it at the peer',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const got = deferred<IncomingRequest>();
    listener.setRequestHandler((req) => got.resolve(req));

    const controller = new AbortController();
    const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }, [], { signal: controller.signal });
    const req = await got.promise;
    const abortedAtPeer = whenAborted(req.signal);
    controller.abort();

    await assert.rejects(call, isCode('CANCELLED'));
    assert.equal(dialer.pendingCount, 0);
    assertCode(await abortedAtPeer, 'CANCELLED');
    assert.equal(listener.incomingCount, 0);
    await assertStillServes(dialer, listener, 'after-cancel');
  },
);

test(
  'rpc - a request whose signal is already aborted fails with CANCELLED and is never sent',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const seen: number[] = [];
    listener.setRequestHandler((req) => {
      seen.push(req.requestId);
      echo(req);
    });
    await assert.rejects(
      dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 0 }, [], { signal: AbortSignal.abort() }),
      isCode('CANCELLED'),
    );
    assert.equal(dialer.pendingCount, 0);
    await dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 });
    // the aborted request took no id and reached nobody: the first request the peer saw is id 1
    assert.deepEqual(seen, [1]);
  },
);

test(
  'rpc - a response that arrives in time is not affected by the deadline or the signal',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    listener.setRequestHandler(echo);
    const controller = new AbortController();
    const frame = await dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }, [], {
      timeoutMs: 5000,
      signal: controller.signal,
    });
    assert.deepEqual(frame.meta, { echo: { n: 1 } });
    controller.abort(); // after settling: nothing to cancel
    await assertStillServes(dialer, listener, 'after-abort-of-settled');
    assert.equal(dialer.pendingCount, 0);
  },
);

// ---------------------------------------------------------------------------------------------
// streaming and errors

test(
  'rpc - non-final responses reach onPartial in order and the final one resolves the request',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const incoming = collector<IncomingRequest>(2);
    listener.setRequestHandler(incoming.push);

    const partials = { a: [] as string[], b: [] as string[] };
    const callA = dialer.request(MESSAGE_KIND.INFER_REQUEST, { stream: 'a' }, [], {
      streamWindow: 16,
      onPartial: (f) => partials.a.push(`${(f.meta as { part: number }).part}:${text(f.attachments[0])}`),
    });
    const callB = dialer.request(MESSAGE_KIND.INFER_REQUEST, { stream: 'b' }, [], {
      streamWindow: 16,
      onPartial: (f) => partials.b.push(`${(f.meta as { part: number }).part}:${text(f.attachments[0])}`),
    });
    const [reqA, reqB] = await incoming.full;
    assert.ok(reqA && reqB);

    // two streams interleaved, some parts in the same write, some on later turns
    for (let part = 0; part < 6; part++) {
      reqA.reply(MESSAGE_KIND.INFER_RESPONSE, { part }, [Buffer.from(`a${part}`)], false);
      reqB.reply(MESSAGE_KIND.INFER_RESPONSE, { part }, [Buffer.from(`b${part}`)], false);
      if (part % 2 === 1) await nextTurn();
    }
    reqB.reply(MESSAGE_KIND.INFER_RESPONSE, { part: 'final-b' }, [Buffer.from('B')], true);
    reqA.reply(MESSAGE_KIND.INFER_RESPONSE, { part: 'final-a' }, [Buffer.from('A')], true);
    // nothing after the final frame counts
    reqA.reply(MESSAGE_KIND.INFER_RESPONSE, { part: 99 }, [], false);

    const [finalA, finalB] = await Promise.all([callA, callB]);
    assert.deepEqual(finalA.meta, { part: 'final-a' });
    assert.equal(text(finalA.attachments[0]), 'A');
    assert.deepEqual(finalB.meta, { part: 'final-b' });
    assert.deepEqual(partials.a, ['0:a0', '1:a1', '2:a2', '3:a3', '4:a4', '5:a5']);
    assert.deepEqual(partials.b, ['0:b0', '1:b1', '2:b2', '3:b3', '4:b4', '5:b5']);
    await assertStillServes(dialer, listener, 'after-stream');
    assert.equal(partials.a.length, 6, 'nothing after the final frame reaches onPartial');
  },
);

test(
  'rpc - a stream waits for credit at its window and goes on as the requester takes frames',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const got = deferred<IncomingRequest>();
    listener.setRequestHandler(got.resolve);
    const frames: number[] = [];
    let credit: (() => void) | undefined;
    const fourArrived = deferred<void>();
    const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, {}, [], {
      streamWindow: 4,
      onPartial: (f, c) => {
        frames.push((f.meta as { part: number }).part);
        credit = c;
        if (frames.length === 4) fourArrived.resolve();
      },
    });
    const req = await got.promise;
    req.openStream(4);
    for (let part = 0; part < 3; part++) await req.partial(MESSAGE_KIND.INFER_RESPONSE, { part });
    let roomAfterFourth = false;
    const fourth = req.partial(MESSAGE_KIND.INFER_RESPONSE, { part: 3 }).then(() => {
      roomAfterFourth = true;
    });
    await fourArrived.promise;
    // the four frames are here and none was taken: no credit went back, the sender still waits
    await assertStillServes(dialer, listener, 'while-stalled');
    assert.equal(roomAfterFourth, false);
    assert.equal((req as unknown as { unacknowledged: number }).unacknowledged, 4);
    credit?.();
    await fourth;
    assert.equal(roomAfterFourth, true);
    // taking more than was received returns nothing more (credit is per frame received)
    for (let i = 0; i < 10; i++) credit?.();
    await req.partial(MESSAGE_KIND.INFER_RESPONSE, { part: 4 });
    req.reply(MESSAGE_KIND.INFER_RESPONSE, { part: 'final' });
    assert.deepEqual((await call).meta, { part: 'final' });
    assert.deepEqual(frames, [0, 1, 2, 3, 4]);
  },
);

test('rpc - a cancel wakes a stream waiting for credit with CANCELLED', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectReadyPair(t);
  const got = deferred<IncomingRequest>();
  listener.setRequestHandler(got.resolve);
  const controller = new AbortController();
  const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, {}, [], {
    streamWindow: 1,
    signal: controller.signal,
    onPartial: () => controller.abort(),
  });
  const cancelled = assert.rejects(call, isCode('CANCELLED'));
  const req = await got.promise;
  req.openStream(1);
  await assert.rejects(req.partial(MESSAGE_KIND.INFER_RESPONSE, { part: 0 }), isCode('CANCELLED'));
  await cancelled;
  await assertStillServes(dialer, listener, 'after-cancel');
});

test(
  'rpc - partial responses beyond the stream window close the connection with PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const got = deferred<IncomingRequest>();
    listener.setRequestHandler(got.resolve);
    const closed = nextClose(dialer);
    const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, {}, [], { streamWindow: 2, onPartial: () => {} });
    const req = await got.promise;
    // a lying peer: raw partial frames, ignoring the window
    for (let part = 0; part < 3; part++) req.reply(MESSAGE_KIND.INFER_RESPONSE, { part }, [], false);
    assertCode(await closed, 'PROTOCOL_ERROR', /more partial responses than its stream window of 2/);
    await assert.rejects(call, isCode('CONNECTION_LOST'));
  },
);

test(
  'rpc - a partial response to a request that did not ask to stream is a PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const got = deferred<IncomingRequest>();
    listener.setRequestHandler(got.resolve);
    const closed = nextClose(dialer);
    const call = dialer.request(MESSAGE_KIND.INFER_REQUEST, {});
    (await got.promise).reply(MESSAGE_KIND.INFER_RESPONSE, { part: 0 }, [], false);
    assertCode(await closed, 'PROTOCOL_ERROR', /did not ask to stream/);
    await assert.rejects(call, isCode('CONNECTION_LOST'));
  },
);

test('rpc - an ERROR frame rejects that request with the rebuilt InfergridError', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectReadyPair(t);
  listener.setRequestHandler((req) => {
    const { n } = req.meta as { n: number };
    if (n === 0) {
      req.fail(
        new InfergridError('MODEL_NOT_FOUND', 'model "nope" version "3" is not hosted here', {
          details: { model: 'nope', version: '3' },
        }),
      );
    } else if (n === 1) {
      req.fail(new InfergridError('OVERLOADED', 'queue full (64 waiting); retry later'));
    } else if (n === 2) {
      // a newer peer's code this side does not know
      listener.send(
        MESSAGE_KIND.ERROR,
        { code: 'FROM_THE_FUTURE', message: 'new failure', details: { hint: 'x' } },
        [],
        req.requestId,
        FRAME_FLAG.FINAL,
      );
    } else {
      echo(req);
    }
  });

  await assert.rejects(dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 0 }), (err) => {
    assertCode(err, 'MODEL_NOT_FOUND');
    assert.equal(err.message, 'model "nope" version "3" is not hosted here');
    assert.deepEqual(err.details, { model: 'nope', version: '3' });
    assert.equal(err.retryable, false);
    return true;
  });
  await assert.rejects(dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 1 }), (err) => {
    assertCode(err, 'OVERLOADED');
    assert.equal(err.message, 'queue full (64 waiting); retry later');
    assert.equal(err.details, undefined);
    assert.equal(err.retryable, true);
    return true;
  });
  await assert.rejects(dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 2 }), (err) => {
    assertCode(err, 'INTERNAL');
    assert.equal(err.message, 'new failure');
    assert.deepEqual(err.details, { hint: 'x', peerCode: 'FROM_THE_FUTURE' });
    return true;
  });
  // an error fails one request, never the connection
  assert.equal(dialer.closed, false);
  assert.equal(listener.closed, false);
  const ok = await dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 3 });
  assert.deepEqual(ok.meta, { echo: { n: 3 } });
  assert.equal(dialer.pendingCount, 0);
});

test('rpc - an IncomingRequest answers once: a second reply or fail is dropped', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectReadyPair(t);
  const partials: unknown[] = [];
  listener.setRequestHandler((req) => {
    req.reply(MESSAGE_KIND.INFER_RESPONSE, { answer: 1 });
    req.reply(MESSAGE_KIND.INFER_RESPONSE, { answer: 2 });
    req.reply(MESSAGE_KIND.INFER_RESPONSE, { answer: 3 }, [], false);
    req.fail(new InfergridError('BACKEND_ERROR', 'too late'));
  });
  const frame = await dialer.request(MESSAGE_KIND.INFER_REQUEST, {}, [], {
    onPartial: (f) => partials.push(f.meta),
  });
  assert.deepEqual(frame.meta, { answer: 1 });
  // the peer's extra frames, had they been sent, would arrive before this round trip's answer
  await assertStillServes(dialer, listener, 'after-double-answer');
  assert.deepEqual(partials, []);
});

test(
  'rpc - a request over maxFrameBytes fails with FRAME_TOO_LARGE and the connection stays up',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t, { dialer: { maxFrameBytes: 1024 } });
    await assert.rejects(
      dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: 0 }, [Buffer.alloc(2048)]),
      isCode('FRAME_TOO_LARGE', /exceeds the limit of 1024 bytes/),
    );
    assert.equal(dialer.pendingCount, 0);
    await assertStillServes(dialer, listener, 'after-too-large');
  },
);

test(
  'rpc - an answer over maxFrameBytes reaches the caller as an INTERNAL error (the answerer failed, not the request)',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t, { listener: { maxFrameBytes: 1024 } });
    listener.setRequestHandler((req) =>
      req.reply(MESSAGE_KIND.INFER_RESPONSE, { big: true }, [Buffer.alloc(4096)]),
    );
    await assert.rejects(
      dialer.request(MESSAGE_KIND.INFER_REQUEST, {}),
      isCode('INTERNAL', /response could not be sent: frame of \d+ bytes exceeds the limit of 1024 bytes/),
    );
    assert.equal(listener.incomingCount, 0);
    assert.equal(listener.closed, false);
  },
);

// ---------------------------------------------------------------------------------------------
// lost connections

test(
  'rpc - a peer socket destroyed mid-flight fails every pending request with retryable CONNECTION_LOST',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const N = 10;
    const atListener = collector<IncomingRequest>(N);
    const atDialer = collector<IncomingRequest>(3);
    listener.setRequestHandler(atListener.push);
    dialer.setRequestHandler(atDialer.push);

    const outgoing = Array.from({ length: N }, (_, i) =>
      dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: i }),
    );
    const reverse = Array.from({ length: 3 }, (_, i) =>
      listener.request(MESSAGE_KIND.INFER_REQUEST, { r: i }),
    );
    const settledOut = Promise.allSettled(outgoing);
    const settledReverse = Promise.allSettled(reverse);
    const incomingAtListener = await atListener.full;
    const incomingAtDialer = await atDialer.full;

    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);
    listener.socket.destroy(); // the listener's side dies without a goodbye

    for (const result of [...(await settledOut), ...(await settledReverse)]) {
      assert.equal(result.status, 'rejected');
      assertCode(result.reason, 'CONNECTION_LOST');
      assert.equal(result.reason.retryable, true);
    }
    // incoming requests on both sides see their signals abort
    for (const req of [...incomingAtListener, ...incomingAtDialer]) {
      assertCode(await whenAborted(req.signal), 'CONNECTION_LOST');
    }
    assertCode(await dialerClosed, 'CONNECTION_LOST');
    assertCode(await listenerClosed, 'CONNECTION_LOST');
    assert.equal(dialer.closed, true);
    assert.equal(dialer.pendingCount + dialer.incomingCount, 0);
    assert.equal(listener.pendingCount + listener.incomingCount, 0);

    // and nothing new can be started on it
    await assert.rejects(dialer.request(MESSAGE_KIND.INFER_REQUEST, {}), isCode('CONNECTION_LOST'));
    await assert.rejects(dialer.receive(1000, 'anything'), isCode('CONNECTION_LOST'));
  },
);

test(
  'rpc - closing one side fails its pending requests and aborts the requests the other side was serving',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const atListener = collector<IncomingRequest>(5);
    listener.setRequestHandler(atListener.push);
    const outgoing = Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: i })),
    );
    const incoming = await atListener.full;
    const dialerClosed = nextClose(dialer);
    const listenerClosed = nextClose(listener);

    dialer.close();

    assert.equal(await dialerClosed, undefined, 'a clean local close carries no error');
    for (const result of await outgoing) {
      assert.equal(result.status, 'rejected');
      assertCode(result.reason, 'CONNECTION_LOST');
    }
    for (const req of incoming) assertCode(await whenAborted(req.signal), 'CONNECTION_LOST');
    assertCode(await listenerClosed, 'CONNECTION_LOST', /closed by peer/);
    assert.equal(listener.incomingCount, 0);
  },
);

// ---------------------------------------------------------------------------------------------
// heartbeats and the watchdog

test('rpc - heartbeats carry the heartbeat() payload to the peer message handler', TIMEOUT, async (t) => {
  let calls = 0;
  const { listener } = await connectReadyPair(t, {
    dialer: {
      heartbeatIntervalMs: 10,
      heartbeat: () => ({
        sentAtMs: ++calls,
        inFlight: 7,
        draining: false,
        models: [{ name: 'm', version: '1', state: 'ready' as const }],
      }),
    },
  });
  const heartbeats = collector<Frame>(3);
  listener.setMessageHandler(heartbeats.push);
  const frames = await heartbeats.full;
  for (const [i, frame] of frames.entries()) {
    assert.equal(frame.kind, MESSAGE_KIND.HEARTBEAT);
    assert.equal(frame.requestId, 0);
    assert.deepEqual(checkHeartbeat(frame.meta), {
      sentAtMs: i + 1,
      inFlight: 7,
      draining: false,
      models: [{ name: 'm', version: '1', state: 'ready' }],
    });
  }
});

test('rpc - without a heartbeat() option a heartbeat carries the time it was sent', TIMEOUT, async (t) => {
  const clock = 1_234_567;
  const { dialer } = await connectReadyPair(t, { listener: { heartbeatIntervalMs: 10, now: () => clock } });
  const got = deferred<Frame>();
  dialer.setMessageHandler(got.resolve);
  const frame = await got.promise;
  assert.equal(frame.kind, MESSAGE_KIND.HEARTBEAT);
  assert.deepEqual(frame.meta, { sentAtMs: clock });
});

test('rpc - a peer that heartbeats keeps the watchdog quiet', TIMEOUT, async (t) => {
  const { listener } = await connectReadyPair(t, {
    dialer: { heartbeatIntervalMs: 10 },
    listener: { peerTimeoutMs: 300 },
  });
  // 100 heartbeats span several peer timeouts; the watchdog must not have fired in between
  const heartbeats = collector<Frame>(100);
  listener.setMessageHandler(heartbeats.push);
  await heartbeats.full;
  assert.equal(listener.closed, false);
});

test(
  'rpc - a peer with heartbeats disabled is closed by the watchdog with CONNECTION_LOST',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t, { listener: { peerTimeoutMs: 100 } });
    const listenerClosed = nextClose(listener);
    const dialerClosed = nextClose(dialer);
    const atDialer = deferred<IncomingRequest>();
    dialer.setRequestHandler(atDialer.resolve); // never answered
    const call = listener.request(MESSAGE_KIND.INFER_REQUEST, {});
    const settled = call.then(
      () => undefined,
      (err: unknown) => err,
    );
    const incoming = await atDialer.promise;

    assertCode(await listenerClosed, 'CONNECTION_LOST', /sent nothing for \d+ ms \(limit 100 ms\)/);
    assertCode(await settled, 'CONNECTION_LOST');
    // the other side sees the connection go
    assertCode(await dialerClosed, 'CONNECTION_LOST');
    assertCode(await whenAborted(incoming.signal), 'CONNECTION_LOST');
  },
);

test(
  'rpc - a raw peer that completes the handshake and then goes silent is closed by the watchdog',
  TIMEOUT,
  async (t) => {
    const server = await startServer(t);
    const received = collector<Frame>(2);
    const { socket: raw, errors: rawErrors, closed: rawClosed } = rawClient(t, server.port, received.push);

    // the listener heartbeats itself: sending keeps nothing alive, only hearing does
    const listener = new RpcConnection(await server.nextSocket(), {
      ...QUIET,
      heartbeatIntervalMs: 20,
      peerTimeoutMs: 300,
      side: 'listener',
    });
    t.after(() => listener.close());
    const listenerClosed = nextClose(listener);
    // no credentials on either side: the raw peer's PROOF (none) may go right behind its HELLO
    const accepted = acceptHandshake(listener, { role: 'coordinator', id: 'c1' }, 5000);
    const hello = {
      magic: PROTOCOL_MAGIC,
      protocolVersion: PROTOCOL_VERSION,
      role: 'worker',
      id: 'silent',
      nonce: randomBytes(NONCE_BYTES),
    };
    for (const [kind, meta] of [
      [MESSAGE_KIND.HELLO, hello],
      [MESSAGE_KIND.PROOF, {}],
    ] as const) {
      raw.write(
        encodeFrameToBuffer(packr, { kind, flags: 0, requestId: 0, meta, attachments: [] }, MAX_FRAME_BYTES),
      );
    }
    assert.equal((await accepted).id, 'silent');
    const [challenge, ack] = await received.full;
    assert.equal(challenge?.kind, MESSAGE_KIND.CHALLENGE);
    assert.equal(ack?.kind, MESSAGE_KIND.HELLO_ACK);
    assert.equal(listener.ready, true);

    // from here the raw peer reads but never writes
    assertCode(await listenerClosed, 'CONNECTION_LOST', /sent nothing/);
    await rawClosed;
    assert.ok(received.items.length >= 1);
    assert.deepEqual(rawErrors, []);
  },
);

test('rpc - heartbeats go out every heartbeatIntervalMs even when the watchdog ticks faster', {
  ...TIMEOUT,
}, async (t) => {
  // subject: heartbeat every 1000 ms, watchdog tick 100 ms; its peer feeds the watchdog every 20 ms
  const subject = await connectReadyPair(t, {
    dialer: { heartbeatIntervalMs: 1000, peerTimeoutMs: 400 },
    listener: { heartbeatIntervalMs: 20 },
  });
  subject.dialer.setMessageHandler(() => {});
  const fromSubject: Frame[] = [];
  subject.listener.setMessageHandler((frame) => fromSubject.push(frame));
  // control: the same heartbeat interval with no watchdog
  const control = await connectReadyPair(t, { dialer: { heartbeatIntervalMs: 1000 } });
  const controlBeat = deferred<Frame>();
  control.listener.setMessageHandler(controlBeat.resolve);

  await controlBeat.promise;
  // both send their first heartbeat one interval after they were made
  assert.ok(
    fromSubject.length <= 2,
    `subject sent ${fromSubject.length} heartbeats in the time the control sent 1`,
  );
});

// ---------------------------------------------------------------------------------------------
// corrupt input

const header = (frameLength: number, kind: number, count: number, requestId: number, metaLength: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(frameLength, 0);
  b.writeUInt8(kind, 4);
  b.writeUInt8(0, 5);
  b.writeUInt16LE(count, 6);
  b.writeUInt32LE(requestId, 8);
  b.writeUInt32LE(metaLength, 12);
  return b;
};

const validFrame = (kind: number, requestId: number, meta: unknown): Buffer =>
  encodeFrameToBuffer(packr, { kind, flags: 0, requestId, meta, attachments: [] }, MAX_FRAME_BYTES);

const GARBAGE: { name: string; bytes: () => Buffer; code: string; message: RegExp }[] = [
  {
    name: 'a length prefix over maxFrameBytes',
    bytes: () => Buffer.alloc(64, 0xff),
    code: 'FRAME_TOO_LARGE',
    message: /over the limit/,
  },
  {
    name: 'an unknown message kind',
    bytes: () => {
      const b = validFrame(MESSAGE_KIND.HEARTBEAT, 0, { sentAtMs: 1 });
      b.writeUInt8(200, 4);
      return b;
    },
    code: 'UNKNOWN_MESSAGE',
    message: /unknown message kind 200/,
  },
  {
    name: 'a frame shorter than its header',
    bytes: () => Buffer.from([4, 0, 0, 0, 4, 0, 0, 0]),
    code: 'PROTOCOL_ERROR',
    message: /shorter than its header/,
  },
  {
    name: 'inconsistent lengths',
    bytes: () => header(12, MESSAGE_KIND.HEARTBEAT, 0, 0, 100),
    code: 'PROTOCOL_ERROR',
    message: /inconsistent/,
  },
  {
    name: 'a corrupt msgpack body',
    // 16 header bytes + 2 meta bytes, padded to 24: frameLength 20
    bytes: () =>
      Buffer.concat([
        header(20, MESSAGE_KIND.HEARTBEAT, 0, 0, 2),
        Buffer.from([0x92, 0x01, 0, 0, 0, 0, 0, 0]),
      ]),
    code: 'PROTOCOL_ERROR',
    message: /corrupt msgpack/,
  },
  {
    name: 'a request without a request id',
    bytes: () => validFrame(MESSAGE_KIND.INFER_REQUEST, 0, { model: 'm' }),
    code: 'PROTOCOL_ERROR',
    message: /without a request id/,
  },
  {
    name: 'a request id already in use',
    bytes: () =>
      Buffer.concat([
        validFrame(MESSAGE_KIND.INFER_REQUEST, 7, { n: 1 }),
        validFrame(MESSAGE_KIND.INFER_REQUEST, 7, { n: 2 }),
      ]),
    code: 'PROTOCOL_ERROR',
    message: /request id 7 is already in use/,
  },
  {
    name: 'stream credit without a request id',
    bytes: () => validFrame(MESSAGE_KIND.STREAM_CREDIT, 0, { credits: 1 }),
    code: 'PROTOCOL_ERROR',
    message: /STREAM_CREDIT without a request id/,
  },
  {
    name: 'stream credit that is not a positive integer',
    bytes: () => validFrame(MESSAGE_KIND.STREAM_CREDIT, 9, { credits: 0.5 }),
    code: 'PROTOCOL_ERROR',
    message: /positive integer/,
  },
  {
    name: 'stream credit for a request that does not stream',
    bytes: () =>
      Buffer.concat([
        validFrame(MESSAGE_KIND.INFER_REQUEST, 9, { n: 1 }),
        validFrame(MESSAGE_KIND.STREAM_CREDIT, 9, { credits: 1 }),
      ]),
    code: 'PROTOCOL_ERROR',
    message: /request 9, which has no stream/,
  },
];

for (const garbage of GARBAGE) {
  test(`rpc - ${garbage.name} closes that connection only with ${garbage.code}`, TIMEOUT, async (t) => {
    const victim = await connectReadyPair(t);
    const bystander = await connectReadyPair(t, {}, victim.server);
    bystander.listener.setRequestHandler(echo);
    const held: IncomingRequest[] = [];
    victim.listener.setRequestHandler((req) => held.push(req)); // never answered
    const victimClosed = nextClose(victim.listener);
    const dialerClosed = nextClose(victim.dialer);
    const bystanderBusy = bystander.dialer.request(MESSAGE_KIND.INFER_REQUEST, { before: true });

    victim.dialer.socket.write(garbage.bytes());

    assertCode(await victimClosed, garbage.code, garbage.message);
    // the peer is told why before the connection goes
    const error = await victim.dialer.receive(5000, 'ERROR');
    assert.equal(error.kind, MESSAGE_KIND.ERROR);
    assert.equal(error.requestId, 0);
    assert.equal((error.meta as { code: string }).code, garbage.code);
    assertCode(await dialerClosed, 'CONNECTION_LOST');
    for (const req of held) assertCode(await whenAborted(req.signal), 'CONNECTION_LOST');

    // the other connection on the same server keeps working
    assert.deepEqual((await bystanderBusy).meta, { echo: { before: true } });
    await assertStillServes(bystander.dialer, bystander.listener, 'bystander');
    assert.equal(bystander.listener.closed, false);
  });
}

// ---------------------------------------------------------------------------------------------
// before the handshake

const EARLY: { kind: keyof typeof MESSAGE_KIND; send: (conn: RpcConnection) => Promise<unknown> }[] = [
  {
    kind: 'INFER_REQUEST',
    send: (conn) => conn.request(MESSAGE_KIND.INFER_REQUEST, { model: 'm', version: '1', inputs: [] }),
  },
  { kind: 'PING', send: (conn) => conn.ping(5000) },
  {
    kind: 'HEARTBEAT',
    send: async (conn) => conn.send(MESSAGE_KIND.HEARTBEAT, { sentAtMs: 1 }),
  },
  {
    kind: 'REGISTER',
    send: async (conn) => conn.send(MESSAGE_KIND.REGISTER, { workerId: 'w', models: [] }),
  },
  { kind: 'CANCEL', send: async (conn) => conn.send(MESSAGE_KIND.CANCEL, {}, [], 1) },
];

for (const early of EARLY) {
  test(
    `rpc - ${early.kind} before the handshake closes the connection with PROTOCOL_ERROR`,
    TIMEOUT,
    async (t) => {
      const { dialer, listener } = await connectPair(t);
      let requests = 0;
      listener.setRequestHandler(() => requests++);
      const listenerClosed = nextClose(listener);
      const sent = early.send(dialer).then(
        () => undefined,
        (err: unknown) => err,
      );

      assertCode(await listenerClosed, 'PROTOCOL_ERROR', new RegExp(`${early.kind} before the handshake`));
      const error = await dialer.receive(5000, 'ERROR');
      assert.equal((error.meta as { code: string }).code, 'PROTOCOL_ERROR');
      const outcome = await sent;
      if (early.kind === 'INFER_REQUEST' || early.kind === 'PING') assertCode(outcome, 'CONNECTION_LOST');
      assert.equal(requests, 0);
      assert.equal(listener.ready, false);
    },
  );
}

test('rpc - a dialer that is not ready yet refuses a request from the listener', TIMEOUT, async (t) => {
  const { dialer, listener } = await connectPair(t);
  listener.markReady();
  const dialerClosed = nextClose(dialer);
  const call = listener.request(MESSAGE_KIND.INFER_REQUEST, {}).then(
    () => undefined,
    (err: unknown) => err,
  );
  assertCode(await dialerClosed, 'PROTOCOL_ERROR', /INFER_REQUEST before the handshake/);
  assertCode(await call, 'CONNECTION_LOST');
});

// ---------------------------------------------------------------------------------------------
// connection-level messages

test(
  'rpc - receive() and setMessageHandler get messages that arrived before anyone asked, in order',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const burst: [number, unknown][] = [
      [MESSAGE_KIND.REGISTER, { workerId: 'w1', models: [] }],
      [MESSAGE_KIND.HEARTBEAT, { sentAtMs: 1 }],
      [MESSAGE_KIND.DRAIN, { reason: 'zero' }],
      [MESSAGE_KIND.DRAIN, { reason: 'first' }],
      [MESSAGE_KIND.DRAIN, { reason: 'second' }],
    ];
    const totalBytes = burst.reduce((sum, [kind, meta]) => sum + validFrame(kind, 0, meta).byteLength, 0);
    // this listener runs after the connection's own, so once it has counted every byte all five
    // messages have been dispatched with no receiver and no handler
    const allIn = deferred<void>();
    let bytes = 0;
    listener.socket.on('data', (chunk: Buffer) => {
      bytes += chunk.byteLength;
      if (bytes >= totalBytes) allIn.resolve();
    });
    for (const [kind, meta] of burst) dialer.send(kind, meta); // one tick: one write, one chunk
    await allIn.promise;

    const first = await listener.receive(1, 'REGISTER');
    assert.equal(first.kind, MESSAGE_KIND.REGISTER);
    assert.deepEqual(first.meta, burst[0]![1]);
    // a heartbeat nobody listened for is not kept (it only proved the peer alive)
    const second = await listener.receive(1, 'DRAIN');
    assert.deepEqual(second.meta, { reason: 'zero' });

    const handled: Frame[] = [];
    const third = deferred<void>();
    listener.setMessageHandler((frame) => {
      handled.push(frame);
      if (handled.length === 3) third.resolve();
    });
    // the queued ones are handed over at once, before anything newer
    assert.deepEqual(
      handled.map((f) => f.meta),
      [{ reason: 'first' }, { reason: 'second' }],
    );
    dialer.send(MESSAGE_KIND.HEARTBEAT, { sentAtMs: 2 });
    await third.promise;
    assert.deepEqual(handled[2]!.meta, { sentAtMs: 2 });
    assert.equal(listener.closed, false);
  },
);

test(
  'rpc - a waiting receive() gets the next message before the message handler does',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const handled: Frame[] = [];
    listener.setMessageHandler((frame) => handled.push(frame));
    const waiting = listener.receive(5000, 'REGISTER');
    await assert.rejects(listener.receive(5000, 'twice'), isCode('INTERNAL', /already waiting/));
    dialer.send(MESSAGE_KIND.REGISTER, { workerId: 'w', models: [] });
    const frame = await waiting;
    assert.equal(frame.kind, MESSAGE_KIND.REGISTER);
    assert.deepEqual(handled, []);
  },
);

test(
  'rpc - more than 64 unclaimed connection-level messages close the connection with PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const closed = nextClose(listener);
    for (let i = 0; i < 65; i++) dialer.send(MESSAGE_KIND.DRAIN, { reason: String(i) });
    assertCode(await closed, 'PROTOCOL_ERROR', /more than 64 messages/);
  },
);

test(
  'rpc - requests that arrive before setRequestHandler wait for it and are handed over in order',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const calls = Array.from({ length: 5 }, (_, i) => dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: i }));
    // nobody serves yet: a round trip the other way proves the five requests have arrived
    await listener.ping(5000);
    assert.equal(listener.incomingCount, 5);

    const order: number[] = [];
    listener.setRequestHandler((req) => {
      order.push((req.meta as { n: number }).n);
      echo(req);
    });
    assert.deepEqual(order, [0, 1, 2, 3, 4], 'the queued requests are handed over at once, in order');
    const frames = await Promise.all(calls);
    assert.deepEqual(
      frames.map((f) => f.meta),
      [0, 1, 2, 3, 4].map((n) => ({ echo: { n } })),
    );
    assert.equal(listener.incomingCount, 0);
  },
);

test(
  'rpc - more than 64 requests with no request handler close the connection with PROTOCOL_ERROR',
  TIMEOUT,
  async (t) => {
    const { dialer, listener } = await connectReadyPair(t);
    const closed = nextClose(listener);
    const calls = Promise.allSettled(
      Array.from({ length: 65 }, (_, i) => dialer.request(MESSAGE_KIND.INFER_REQUEST, { n: i })),
    );
    assertCode(await closed, 'PROTOCOL_ERROR', /more than 64 requests/);
    for (const result of await calls) {
      assert.equal(result.status, 'rejected');
      assertCode(result.reason, 'CONNECTION_LOST');
    }
  },
);

test('rpc - the constructor rejects negative heartbeat and peer timeouts', () => {
  const socket = new Socket(); // never connected: the options are checked first
  try {
    assert.throws(
      () => new RpcConnection(socket, { ...QUIET, heartbeatIntervalMs: -1, side: 'dialer' }),
      /heartbeatIntervalMs must be >= 0/,
    );
    assert.throws(
      () => new RpcConnection(socket, { ...QUIET, peerTimeoutMs: Number.NaN, side: 'dialer' }),
      /peerTimeoutMs must be >= 0/,
    );
  } finally {
    socket.destroy();
  }
});

test(
  'rpc - before the handshake a peer may not announce a frame over 1 MiB; after it, maxFrameBytes applies',
  TIMEOUT,
  async (t) => {
    const big = 8 * 1024 * 1024;
    const { dialer, listener } = await connectPair(t, {
      dialer: { maxFrameBytes: big * 2 },
      listener: { maxFrameBytes: big * 2 },
    });
    const closed = nextClose(listener);
    // just the 4-byte prefix of a 2 MiB frame: refused before a byte of its body is buffered
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(2 * 1024 * 1024);
    dialer.socket.write(prefix);
    assertCode(
      await closed,
      'FRAME_TOO_LARGE',
      /over the limit of 1048576 \(the limit before the handshake\)/,
    );

    const ready = await connectReadyPair(t, {
      dialer: { maxFrameBytes: big * 2 },
      listener: { maxFrameBytes: big * 2 },
    });
    ready.listener.setRequestHandler((req) =>
      req.reply(MESSAGE_KIND.INFER_RESPONSE, { n: req.attachments[0]!.byteLength }),
    );
    const answer = await ready.dialer.request(MESSAGE_KIND.INFER_REQUEST, {}, [Buffer.alloc(big)]);
    assert.deepEqual(answer.meta, { n: big });
  },
);
