/**
 * Property-based fuzzing of the RPC ports (issue 14): malformed frames (a lying length prefix,
 * an oversize one, garbage msgpack, valid msgpack with the wrong meta types, unknown kinds,
 * lying attachment tables, frames out of order) sent on raw sockets to a coordinator's RPC port
 * and a worker's listening port, before the handshake and after a valid one. A malformed frame
 * closes only its own connection: after every case a well-behaved worker, connected to the
 * same coordinator, still answers an infer over HTTP, and both processes are alive.
 *
 * Left out on purpose: DRAIN sent to a worker (an authenticated coordinator may drain it; that
 * is the message's meaning, not a fault), and REGISTER/HEARTBEAT metas naming the served model
 * (an authenticated worker that claims a model and never answers is a liar the health checks
 * deal with, not a protocol fault). Fake peers use ids of their own for the same reason.
 */

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import {
  FRAME_HEADER_BYTES,
  MESSAGE_KIND,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  createPackr,
  encodeFrameToBuffer,
} from '../../src/protocol/index.ts';
import {
  type RunningCoordinator,
  type Spawned,
  startCoordinator,
  startWorker,
  waitForWorkers,
  TEST_CLUSTER_SECRET,
  writeConfig,
} from '../fixtures/processes.ts';
import { type RawPeer, completeHandshake, openRawPeer } from '../fixtures/raw-rpc.ts';

// the fixtures give every process this cluster secret (INFERGRID_TOKEN)
const TOKEN = TEST_CLUSTER_SECRET;
const CONFIG = `
rpc: { handshakeTimeoutMs: 1000 }
models:
  - name: m
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;

/** Cases per target and phase: each opens a connection and runs an infer after it. */
const RUNS = 40;

const packr = createPackr();
const KINDS = Object.values(MESSAGE_KIND) as number[];

interface Fixture {
  coordinator: RunningCoordinator;
  worker: Spawned;
  /** host:port of the worker's listening RPC port. */
  workerAddress: string;
}

async function setup(t: TestContext): Promise<Fixture> {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  // the worker dials the coordinator and listens too: both of its doors are fuzzed
  const worker = await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress, port: 0 });
  await waitForWorkers(coordinator.url, 1, ['m']);
  assert.equal(typeof worker.ready.port, 'number');
  return { coordinator, worker, workerAddress: `127.0.0.1:${worker.ready.port}` };
}

/** Both processes run, and the well-behaved worker still serves through the coordinator. */
async function assertServing(f: Fixture, what: string): Promise<void> {
  assert.equal(
    f.coordinator.child.exitCode,
    null,
    `coordinator exited after ${what}:\n${f.coordinator.output()}`,
  );
  assert.equal(f.worker.child.exitCode, null, `worker exited after ${what}:\n${f.worker.output()}`);
  const res = await f.coordinator.client.infer('m', [
    { name: 'x', datatype: 'FP32', shape: [2], data: [3, 4] },
  ]);
  assert.deepEqual(res.outputs[0]!.data, [3, 4], what);
}

// ---------------------------------------------------------------- generators

const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(undefined, null, -1, 2 ** 32, 2 ** 53, 1.5, '', [], {}),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.uint8Array({ maxLength: 16 }),
);

/** Well-formed metas of each kind, to be mutated into wrong types. */
const TEMPLATES: Record<number, () => Record<string, unknown>> = {
  [MESSAGE_KIND.HELLO]: () => ({
    magic: PROTOCOL_MAGIC,
    protocolVersion: PROTOCOL_VERSION,
    role: 'worker',
    id: 'fuzz',
    nonce: new Uint8Array(32),
  }),
  [MESSAGE_KIND.CHALLENGE]: () => ({
    protocolVersion: PROTOCOL_VERSION,
    role: 'coordinator',
    id: 'c',
    nonce: new Uint8Array(32),
    proof: new Uint8Array(32),
  }),
  [MESSAGE_KIND.PROOF]: () => ({ proof: new Uint8Array(32) }),
  [MESSAGE_KIND.HELLO_ACK]: () => ({ protocolVersion: PROTOCOL_VERSION, role: 'coordinator', id: 'c' }),
  [MESSAGE_KIND.REGISTER]: () => ({
    workerId: 'fuzz-register',
    pid: 1,
    models: [
      {
        name: 'ghost',
        version: '1',
        state: 'ready',
        platform: 'x',
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
        outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
        batchable: false,
        maxBatchSize: 0,
      },
    ],
    draining: false,
  }),
  [MESSAGE_KIND.HEARTBEAT]: () => ({
    sentAtMs: 1,
    inFlight: 0,
    models: [{ name: 'ghost', version: '1', state: 'ready' }],
  }),
  [MESSAGE_KIND.INFER_REQUEST]: () => ({
    model: 'm',
    version: '1',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1] }],
    timeoutMs: 1000,
  }),
  [MESSAGE_KIND.INFER_RESPONSE]: () => ({
    model: 'm',
    version: '1',
    outputs: [{ name: 'y', datatype: 'FP32', shape: [1] }],
  }),
  [MESSAGE_KIND.ERROR]: () => ({ code: 'INTERNAL', message: 'x' }),
  [MESSAGE_KIND.MODEL_CONTROL_REQUEST]: () => ({ action: 'load', models: [{ name: 'fuzz' }] }),
  [MESSAGE_KIND.STATS_RESPONSE]: () => ({ models: [] }),
};

/** A template with each chosen key given another value (or removed). */
const metaArb = (kind: number): fc.Arbitrary<unknown> => {
  const template = TEMPLATES[kind];
  if (!template) return anyValue;
  return fc.oneof(
    fc
      .array(fc.tuple(fc.constantFrom(...Object.keys(template())), fc.option(anyValue)), { maxLength: 3 })
      .map((changes) => {
        const meta = template();
        for (const [key, value] of changes) {
          if (value === null) delete meta[key];
          else meta[key] = value;
        }
        return meta;
      }),
    anyValue,
  );
};

interface FrameSpec {
  kind: number;
  flags: number;
  requestId: number;
  meta: unknown;
  attachments: Uint8Array[];
  /** u8/u16/u32 writes over the encoded frame's header: the lies. */
  patches: { offset: number; bytes: 1 | 2 | 4; value: number }[];
  /** Replace the meta's bytes with these (garbage msgpack), same length kept in the header. */
  garbageMeta: Uint8Array | undefined;
  /** Cut this many bytes off the end. */
  cut: number;
}

const frameSpecArb: fc.Arbitrary<FrameSpec> = fc
  .oneof(fc.constantFrom(...KINDS), fc.integer({ min: 0, max: 255 }))
  .chain((kind) =>
    fc.record({
      kind: fc.constant(kind),
      flags: fc.oneof(fc.constant(0), fc.constant(1), fc.nat(255)),
      requestId: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 100 }), fc.constant(0xffffffff)),
      meta: metaArb(kind),
      attachments: fc.array(fc.uint8Array({ maxLength: 24 }), { maxLength: 3 }),
      patches: fc.array(
        fc.oneof(
          fc.record({
            offset: fc.constant(0),
            bytes: fc.constant(4 as const),
            value: fc.oneof(
              fc.nat(32),
              fc.constantFrom(0, 3, 15, 2 ** 20, 2 ** 20 + 1, 2 ** 28, 0xffffffff),
              fc.nat(),
            ),
          }),
          fc.record({ offset: fc.constant(4), bytes: fc.constant(1 as const), value: fc.nat(255) }),
          fc.record({ offset: fc.constant(6), bytes: fc.constant(2 as const), value: fc.nat(0xffff) }),
          fc.record({ offset: fc.constant(8), bytes: fc.constant(4 as const), value: fc.nat() }),
          fc.record({
            offset: fc.constant(12),
            bytes: fc.constant(4 as const),
            value: fc.oneof(fc.nat(64), fc.constant(0xffffffff)),
          }),
          fc.record({ offset: fc.constant(16), bytes: fc.constant(4 as const), value: fc.nat() }),
        ),
        { maxLength: 2 },
      ),
      garbageMeta: fc.option(fc.uint8Array({ minLength: 1, maxLength: 24 }), { nil: undefined, freq: 4 }),
      cut: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, fc.nat(24)),
    }),
  );

function encodeSpec(spec: FrameSpec): Buffer {
  let buf: Buffer;
  try {
    buf = encodeFrameToBuffer(
      packr,
      {
        kind: spec.kind,
        flags: spec.flags,
        requestId: spec.requestId,
        meta: spec.meta,
        attachments: spec.attachments,
      },
      1 << 24,
    );
  } catch {
    // a meta msgpack cannot write: garbage stands in for it
    buf = Buffer.alloc(FRAME_HEADER_BYTES);
    buf.writeUInt32LE(FRAME_HEADER_BYTES - 4, 0);
    buf.writeUInt8(spec.kind, 4);
  }
  if (spec.garbageMeta) {
    const metaAt = FRAME_HEADER_BYTES + 4 * spec.attachments.length;
    const metaLength = buf.readUInt32LE(12);
    const room = Math.min(metaLength, spec.garbageMeta.length, buf.length - metaAt);
    buf.set(spec.garbageMeta.subarray(0, room), metaAt);
  }
  for (const p of spec.patches) {
    if (p.offset + p.bytes > buf.length) continue;
    if (p.bytes === 1) buf.writeUInt8(p.value & 0xff, p.offset);
    else if (p.bytes === 2) buf.writeUInt16LE(p.value & 0xffff, p.offset);
    else buf.writeUInt32LE(p.value >>> 0, p.offset);
  }
  return buf.subarray(0, Math.max(0, buf.length - spec.cut));
}

/** One case: frames (or raw bytes), written in chunks split at arbitrary points. */
const caseArb = fc.record({
  parts: fc.array(
    fc.oneof(
      { weight: 4, arbitrary: frameSpecArb.map(encodeSpec) },
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b)),
    ),
    { minLength: 1, maxLength: 4 },
  ),
  splits: fc.array(fc.nat(), { maxLength: 3 }),
  /** Half-close after writing (else wait for the server to close, or to answer a PING). */
  end: fc.boolean(),
});

type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

function writeCase(peer: RawPeer, c: Case): void {
  const bytes = Buffer.concat(c.parts);
  const cuts = [...new Set(c.splits.map((s) => (bytes.length ? s % bytes.length : 0)))].sort((a, b) => a - b);
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut > at) peer.socket.write(bytes.subarray(at, cut));
    at = cut;
  }
  if (c.end) peer.socket.end();
}

let nextPing = 1_000_001;

/**
 * How long to wait for the PONG behind a case. A case that ends in half a frame swallows the
 * PING into it and nothing answers: this bounds that wait (the check after it does not rely on
 * it — a server holding half a frame has nothing more to process).
 */
const PONG_WAIT_MS = 2000;

/**
 * Waits until the server has dealt with the case: it closed the connection, or (after a
 * handshake) it still answers a PING sent behind the case's bytes, so everything before was read.
 */
async function settle(peer: RawPeer, handshaken: boolean, c: Case): Promise<void> {
  if (handshaken && !c.end && !peer.socket.destroyed) {
    const id = nextPing;
    nextPing += 2;
    peer.send(MESSAGE_KIND.PING, { sentAtMs: 0 }, id);
    await Promise.race([
      peer.closed,
      peer
        .next((f) => f.kind === MESSAGE_KIND.PONG && f.requestId === id, PONG_WAIT_MS)
        .catch(() => undefined),
    ]);
    return;
  }
  // before the handshake the server answers nothing: it closes on a fault, or at handshakeTimeoutMs
  await peer.closed;
}

type Target = 'coordinator' | 'worker';

/** Opens a connection to `target` and, when asked, completes a valid handshake (and a REGISTER, for the coordinator). */
async function connectTo(
  t: TestContext,
  f: Fixture,
  target: Target,
  handshake: boolean,
  n: number,
): Promise<RawPeer> {
  const address = target === 'coordinator' ? f.coordinator.rpcAddress : f.workerAddress;
  const peer = await openRawPeer(t, address);
  if (!handshake) return peer;
  if (target === 'coordinator') {
    const id = `fuzz-${n}`;
    await completeHandshake(peer, { role: 'worker', id, token: TOKEN });
    peer.send(MESSAGE_KIND.REGISTER, { workerId: id, pid: 1, models: [], draining: false });
  } else {
    await completeHandshake(peer, { role: 'coordinator', id: `fuzz-${n}`, token: TOKEN });
  }
  return peer;
}

/** DRAIN to a worker is a command, not a fault (see the header). */
function allowed(target: Target, handshaken: boolean, c: Case): boolean {
  if (target !== 'worker' || !handshaken) return true;
  return c.parts.every((p) => p.length < 5 || p.readUInt8(4) !== MESSAGE_KIND.DRAIN);
}

for (const target of ['coordinator', 'worker'] as const) {
  for (const handshaken of [false, true]) {
    const phase = handshaken ? 'after a valid handshake' : 'before the handshake';
    test(`rpc fuzz - malformed frames to the ${target} ${phase} close only their own connection`, {
      timeout: 180_000,
    }, async (t) => {
      const f = await setup(t);
      let n = 0;
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          fc.pre(allowed(target, handshaken, c));
          n++;
          const peer = await connectTo(t, f, target, handshaken, n);
          writeCase(peer, c);
          await settle(peer, handshaken, c);
          peer.socket.destroy();
          await assertServing(f, `case ${n}`);
        }),
        { numRuns: RUNS },
      );
    });
  }
}
