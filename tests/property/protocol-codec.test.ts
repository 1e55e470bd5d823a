import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { InfergridError } from '../../src/errors.ts';
import {
  FRAME_HEADER_BYTES,
  alignFrameOffset,
  type Frame,
  FrameDecoder,
  MESSAGE_KIND,
  checkInferRequest,
  createPackr,
  encodeFrame,
  encodeFrameToBuffer,
  isMessageKind,
  tensorsFromWire,
  tensorsToWire,
} from '../../src/protocol/index.ts';
import {
  DATATYPES,
  type Datatype,
  ELEMENT_BYTES,
  type Tensor,
  elementCount,
  encodeBytesElements,
  typedView,
} from '../../src/tensor/index.ts';
import { caught } from '../fixtures/assert.ts';

/** Decoder limit for the tests: far above any generated frame, far below the default. */
const MAX = 1 << 20;
const packr = createPackr();
const KINDS = Object.values(MESSAGE_KIND);

function decoder(maxFrameBytes = MAX): FrameDecoder {
  return new FrameDecoder({ maxFrameBytes, packr });
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * msgpack has no -0 (msgpackr writes it as the integer 0), msgpackr renames a `__proto__` key
 * so that decoding cannot pollute prototypes, and decoded maps are plain objects. None of that
 * occurs in a protocol meta, so generated metas are rebuilt as plain objects without -0 or
 * `__proto__`; everything else must survive exactly.
 */
function msgpackable(value: unknown): unknown {
  if (typeof value === 'number') return Object.is(value, -0) ? 0 : value;
  if (Array.isArray(value)) return value.map(msgpackable);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (k !== '__proto__') out[k] = msgpackable(v);
    return out;
  }
  return value;
}

const jsonArb = fc.jsonValue({ maxDepth: 3 }).map(msgpackable);
const metaArb: fc.Arbitrary<unknown> = fc
  .oneof(
    jsonArb,
    fc.dictionary(fc.string({ unit: 'grapheme' }), fc.oneof(jsonArb, fc.dictionary(fc.string(), jsonArb))),
    fc.record({
      model: fc.string({ unit: 'grapheme' }),
      id: fc.string(),
      nested: fc.record({ deep: fc.record({ list: fc.array(jsonArb, { maxLength: 4 }) }) }),
      big: fc.maxSafeInteger(),
      ratio: fc.double({ noNaN: true, noDefaultInfinity: true }).map(msgpackable),
    }),
    fc.constant(undefined),
  )
  .map(msgpackable);

/** Attachments are often views into a larger buffer, as tensor data is. */
const attachmentArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.uint8Array({ maxLength: 64 }),
  fc.record({ bytes: fc.uint8Array({ maxLength: 64 }), pad: fc.nat(7) }).map(({ bytes, pad }) => {
    const backing = new Uint8Array(pad + bytes.length + 3).fill(0xee);
    backing.set(bytes, pad);
    return backing.subarray(pad, pad + bytes.length);
  }),
);

const frameArb: fc.Arbitrary<Frame> = fc.record({
  kind: fc.constantFrom(...KINDS),
  flags: fc.integer({ min: 0, max: 255 }),
  requestId: fc.integer({ min: 0, max: 0xffffffff }),
  meta: metaArb,
  attachments: fc.array(attachmentArb, { maxLength: 5 }),
});

function assertSameFrame(actual: Frame | undefined, expected: Frame): void {
  assert.ok(actual, 'expected a frame');
  assert.equal(actual.kind, expected.kind);
  assert.equal(actual.flags, expected.flags);
  assert.equal(actual.requestId, expected.requestId);
  assert.deepStrictEqual(actual.meta, expected.meta);
  assert.equal(actual.attachments.length, expected.attachments.length);
  actual.attachments.forEach((a, i) => {
    assert.ok(a instanceof Uint8Array);
    assert.equal(hex(a), hex(expected.attachments[i]!), `attachment ${i}`);
  });
}

function assertSameFrames(actual: Frame[], expected: readonly Frame[]): void {
  assert.equal(actual.length, expected.length, 'frame count');
  for (const [i, f] of expected.entries()) assertSameFrame(actual[i], f);
}

/** A frame built by hand, so tests can write headers the encoder never would. */
function rawFrame(o: {
  kind?: number;
  flags?: number;
  requestId?: number;
  meta: Uint8Array;
  attachments?: Uint8Array[];
}): Buffer {
  const attachments = o.attachments ?? [];
  const head = Buffer.alloc(FRAME_HEADER_BYTES + 4 * attachments.length);
  const padTo = (b: Uint8Array): Uint8Array[] => [
    b,
    new Uint8Array(alignFrameOffset(b.byteLength) - b.byteLength),
  ];
  const metaPad = new Uint8Array(
    alignFrameOffset(head.byteLength + o.meta.byteLength) - head.byteLength - o.meta.byteLength,
  );
  const body = Buffer.concat([head, o.meta, metaPad, ...attachments.flatMap(padTo)]);
  body.writeUInt32LE(body.byteLength - 4, 0);
  body.writeUInt8(o.kind ?? MESSAGE_KIND.PING, 4);
  body.writeUInt8(o.flags ?? 0, 5);
  body.writeUInt16LE(attachments.length, 6);
  body.writeUInt32LE(o.requestId ?? 0, 8);
  body.writeUInt32LE(o.meta.byteLength, 12);
  for (const [i, a] of attachments.entries()) body.writeUInt32LE(a.byteLength, FRAME_HEADER_BYTES + 4 * i);
  return body;
}

function pushAll(d: FrameDecoder, chunks: readonly Uint8Array[]): Frame[] {
  const frames: Frame[] = [];
  for (const c of chunks) frames.push(...d.push(c));
  return frames;
}

// ---------------------------------------------------------------- round trip

test('protocol codec - any frame survives encode then decode', () => {
  fc.assert(
    fc.property(frameArb, (frame) => {
      const d = decoder();
      const frames = d.push(encodeFrameToBuffer(packr, frame, MAX));
      assertSameFrames(frames, [frame]);
      assert.equal(d.bufferedBytes, 0);
    }),
    { numRuns: 300 },
  );
});

test('protocol codec - encodeFrame passes non-empty attachments through uncopied, padded to 8 bytes', () => {
  fc.assert(
    fc.property(frameArb, (frame) => {
      const parts = encodeFrame(packr, frame, MAX);
      const nonEmpty = frame.attachments.filter((a) => a.byteLength > 0);
      // the attachments themselves, in order, as given (not copies)
      assert.deepEqual(
        parts.filter((p) => nonEmpty.includes(p)),
        nonEmpty,
      );
      // everything else after the head is zero padding shorter than 8 bytes
      for (const p of parts.slice(1))
        if (!nonEmpty.includes(p)) assert.ok(p.byteLength < 8 && p.every((b) => b === 0));
      let offset = 0;
      for (const p of parts) {
        if (nonEmpty.includes(p)) assert.equal(offset % 8, 0, 'each attachment starts 8-byte aligned');
        offset += p.byteLength;
      }
      assert.equal(offset % 8, 0, 'the frame is a multiple of 8 bytes');
      // fed as the separate buffers writev would send, they still make the frame
      assertSameFrames(pushAll(decoder(), parts), [frame]);
    }),
    { numRuns: 100 },
  );
});

test('protocol codec - header fields sit at their documented offsets', () => {
  const frame: Frame = {
    kind: MESSAGE_KIND.INFER_RESPONSE,
    flags: 0x81,
    requestId: 0xfedcba98,
    meta: { a: 1 },
    attachments: [Uint8Array.of(1, 2, 3), new Uint8Array(0)],
  };
  const buf = encodeFrameToBuffer(packr, frame, MAX);
  const meta = packr.pack(frame.meta);
  assert.equal(buf.readUInt32LE(0), buf.byteLength - 4);
  assert.equal(buf.readUInt8(4), MESSAGE_KIND.INFER_RESPONSE);
  assert.equal(buf.readUInt8(5), 0x81);
  assert.equal(buf.readUInt16LE(6), 2);
  assert.equal(buf.readUInt32LE(8), 0xfedcba98);
  assert.equal(buf.readUInt32LE(12), meta.byteLength);
  assert.equal(buf.readUInt32LE(16), 3);
  assert.equal(buf.readUInt32LE(20), 0);
  const attachmentAt = alignFrameOffset(FRAME_HEADER_BYTES + 8 + meta.byteLength);
  assert.equal(buf.byteLength, attachmentAt + 8, 'meta padded to 8, the 3-byte attachment padded to 8');
  assert.equal(hex(buf.subarray(attachmentAt, attachmentAt + 3)), '010203');
  assert.equal(hex(buf.subarray(attachmentAt + 3)), '0000000000');
});

test('protocol codec - a frame inside one chunk is decoded as views of that chunk', () => {
  const chunk = encodeFrameToBuffer(
    packr,
    {
      kind: MESSAGE_KIND.INFER_REQUEST,
      flags: 0,
      requestId: 7,
      meta: 'm',
      attachments: [Uint8Array.of(9, 8)],
    },
    MAX,
  );
  const [frame] = decoder().push(chunk);
  assert.ok(frame);
  const a = frame.attachments[0]!;
  assert.equal(a.buffer, chunk.buffer);
  assert.deepEqual([...a], [9, 8]);
  assert.equal((a.byteOffset - chunk.byteOffset) % 8, 0, 'the attachment starts 8-byte aligned in the frame');
});

// ---------------------------------------------------------------- stream splits

test('protocol codec - every split of a frame into two chunks yields the same frame', () => {
  fc.assert(
    fc.property(frameArb, (frame) => {
      const buf = encodeFrameToBuffer(packr, frame, MAX);
      for (let i = 0; i <= buf.byteLength; i++) {
        const d = decoder();
        const first = d.push(buf.subarray(0, i));
        if (i < buf.byteLength) assert.equal(first.length, 0, `no frame before its last byte (split ${i})`);
        const frames = [...first, ...d.push(buf.subarray(i))];
        assertSameFrames(frames, [frame]);
        assert.equal(d.bufferedBytes, 0);
      }
    }),
    { numRuns: 40 },
  );
});

test('protocol codec - a frame fed byte by byte appears exactly when its last byte arrives', () => {
  fc.assert(
    fc.property(frameArb, (frame) => {
      const buf = encodeFrameToBuffer(packr, frame, MAX);
      const d = decoder();
      for (let i = 0; i < buf.byteLength - 1; i++) {
        assert.deepStrictEqual(d.push(buf.subarray(i, i + 1)), []);
        assert.equal(d.bufferedBytes, i + 1);
      }
      assertSameFrames(d.push(buf.subarray(buf.byteLength - 1)), [frame]);
      assert.equal(d.bufferedBytes, 0);
    }),
    { numRuns: 60 },
  );
});

test('protocol codec - concatenated frames split at random points come out whole and in order', () => {
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 6 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (frames, cuts) => {
        const sizes = frames.map((f) => encodeFrameToBuffer(packr, f, MAX).byteLength);
        const stream = Buffer.concat(frames.map((f) => encodeFrameToBuffer(packr, f, MAX)));
        const points = [...new Set(cuts.map((c) => c % (stream.byteLength + 1)))].sort((a, b) => a - b);
        const bounds = [0, ...points, stream.byteLength];
        const d = decoder();
        const out: Frame[] = [];
        for (let i = 1; i < bounds.length; i++) {
          // a copy, as each socket read is a fresh buffer
          out.push(...d.push(Buffer.from(stream.subarray(bounds[i - 1], bounds[i]))));
          let framed = 0;
          for (let k = 0; k < out.length; k++) framed += sizes[k]!;
          assert.equal(d.bufferedBytes, bounds[i]! - framed);
        }
        assertSameFrames(out, frames);
      },
    ),
    { numRuns: 150 },
  );
});

// ---------------------------------------------------------------- tensors and typed meta

const shapeArb = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });

const tensorArb: fc.Arbitrary<Tensor> = fc
  .record({ name: fc.string(), datatype: fc.constantFrom(...DATATYPES), shape: shapeArb })
  .chain(({ name, datatype, shape }) => {
    const n = elementCount(shape);
    const data: fc.Arbitrary<Uint8Array> =
      datatype === 'BYTES'
        ? fc
            .array(fc.uint8Array({ maxLength: 8 }), { minLength: n, maxLength: n })
            .map((elements) => encodeBytesElements(elements))
        : fc.uint8Array({ minLength: n * ELEMENT_BYTES[datatype], maxLength: n * ELEMENT_BYTES[datatype] });
    return data.map((bytes): Tensor => ({ name, datatype: datatype as Datatype, shape, data: bytes }));
  });

test('protocol codec - tensors of every datatype cross the wire with identical bytes, dtype and shape', () => {
  fc.assert(
    fc.property(
      fc.array(tensorArb, { maxLength: 4 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (tensors, id) => {
        const { headers, attachments } = tensorsToWire(tensors);
        const frame: Frame = {
          kind: MESSAGE_KIND.INFER_REQUEST,
          flags: 0,
          requestId: id,
          meta: { model: 'm', version: '1', inputs: headers },
          attachments,
        };
        const [decoded] = decoder().push(encodeFrameToBuffer(packr, frame, MAX));
        assert.ok(decoded);
        assert.equal(decoded.requestId, id);
        const meta = checkInferRequest(decoded.meta);
        const back = tensorsFromWire(meta.inputs, decoded.attachments);
        assert.equal(back.length, tensors.length);
        back.forEach((t, i) => {
          const want = tensors[i]!;
          assert.equal(t.name, want.name);
          assert.equal(t.datatype, want.datatype);
          assert.deepStrictEqual(t.shape, want.shape);
          assert.equal(hex(t.data), hex(want.data));
        });
      },
    ),
    { numRuns: 200 },
  );
});

test('protocol codec - tensorsFromWire rejects bytes that do not fit the datatype and shape', () => {
  const err = caught(() =>
    tensorsFromWire([{ name: 'x', datatype: 'FP32', shape: [2] }], [new Uint8Array(7)]),
  );
  assert.equal(err.code, 'PROTOCOL_ERROR');
  assert.match(err.message, /tensor "x" FP32 \[2\] needs 8 bytes, got 7/);
  const count = caught(() => tensorsFromWire([{ name: 'x', datatype: 'FP32', shape: [1] }], []));
  assert.equal(count.code, 'PROTOCOL_ERROR');
  assert.match(count.message, /1 tensors but carries 0 attachments/);
});

type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint16Array
  | Int32Array
  | BigInt64Array
  | BigUint64Array
  | Uint8Array;

function bytes(array: TypedArray): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

const typedArb: fc.Arbitrary<TypedArray> = fc.oneof(
  fc.float32Array({ maxLength: 16 }),
  fc.float64Array({ maxLength: 16 }),
  fc.int8Array({ maxLength: 16 }),
  fc.uint16Array({ maxLength: 16 }),
  fc.int32Array({ maxLength: 16 }),
  fc.bigInt64Array({ maxLength: 16 }),
  fc.bigUint64Array({ maxLength: 16 }),
  fc.uint8Array({ maxLength: 16 }),
);

test('protocol codec - typed arrays inside meta come back as the same typed array with the same bits', () => {
  fc.assert(
    // the string before the array shifts it to any offset in the frame, aligned or not
    fc.property(fc.string(), typedArb, (before, array) => {
      const frame: Frame = {
        kind: MESSAGE_KIND.HEARTBEAT,
        flags: 0,
        requestId: 0,
        meta: { before, array },
        attachments: [],
      };
      const [decoded] = decoder().push(encodeFrameToBuffer(packr, frame, MAX));
      assert.ok(decoded);
      const meta = decoded.meta as { before: string; array: TypedArray };
      assert.equal(meta.before, before);
      assert.equal(meta.array.constructor, array.constructor);
      assert.equal(meta.array.length, array.length);
      assert.equal(hex(bytes(meta.array)), hex(bytes(array)));
    }),
    { numRuns: 200 },
  );
});

test('protocol codec - a Float32Array in meta keeps its type and values', () => {
  const values = Float32Array.of(1.5, -0, Number.NaN, 3.4028234663852886e38, 1e-45);
  const [decoded] = decoder().push(
    encodeFrameToBuffer(
      packr,
      {
        kind: MESSAGE_KIND.INFER_RESPONSE,
        flags: 1,
        requestId: 3,
        meta: { scores: values },
        attachments: [],
      },
      MAX,
    ),
  );
  assert.ok(decoded);
  const scores = (decoded.meta as { scores: unknown }).scores;
  assert.ok(scores instanceof Float32Array);
  assert.deepStrictEqual(Array.from(scores), Array.from(values));
});

// ---------------------------------------------------------------- corrupt input

test('protocol codec - an announced length over maxFrameBytes fails as soon as the prefix is complete', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 16, max: 4096 }),
      fc.nat(),
      fc.integer({ min: 0, max: 3 }),
      (max, over, split) => {
        const announced = max - 4 + 1 + (over % (0xffffffff - max + 4));
        const prefix = Buffer.alloc(4);
        prefix.writeUInt32LE(announced, 0);
        const d = decoder(max);
        assert.deepStrictEqual(d.push(prefix.subarray(0, split)), []);
        const err = caught(() => d.push(prefix.subarray(split)));
        assert.equal(err.code, 'FRAME_TOO_LARGE');
        assert.deepStrictEqual(err.details, { frameBytes: announced + 4, maxFrameBytes: max });
        // the decoder is failed: it keeps throwing the same error, even for nothing
        assert.equal(
          caught(() => d.push(Uint8Array.of(0))),
          err,
        );
        assert.equal(
          caught(() => d.push(new Uint8Array(0))),
          err,
        );
      },
    ),
    { numRuns: 200 },
  );
});

test('protocol codec - a frame of exactly maxFrameBytes is accepted by both encoder and decoder', () => {
  fc.assert(
    fc.property(frameArb, (frame) => {
      const size = encodeFrameToBuffer(packr, frame, MAX).byteLength;
      const over = caught(() => encodeFrame(packr, frame, size - 1));
      assert.equal(over.code, 'FRAME_TOO_LARGE');
      assert.deepStrictEqual(over.details, { frameBytes: size, maxFrameBytes: size - 1 });
      const exact = encodeFrameToBuffer(packr, frame, size);
      assertSameFrames(decoder(size).push(exact), [frame]);
      const tooSmall = caught(() => decoder(size - 1).push(exact));
      assert.equal(tooSmall.code, 'FRAME_TOO_LARGE');
    }),
    { numRuns: 100 },
  );
});

test('protocol codec - encodeFrame over maxFrameBytes throws FRAME_TOO_LARGE naming the limit', () => {
  const frame: Frame = {
    kind: MESSAGE_KIND.INFER_REQUEST,
    flags: 0,
    requestId: 1,
    meta: {},
    attachments: [new Uint8Array(2000)],
  };
  const err = caught(() => encodeFrame(packr, frame, 1024));
  assert.equal(err.code, 'FRAME_TOO_LARGE');
  assert.match(err.message, /exceeds the limit of 1024 bytes/);
});

test('protocol codec - a length prefix shorter than the header is a PROTOCOL_ERROR', () => {
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(FRAME_HEADER_BYTES - 5, 0);
  const err = caught(() => decoder().push(prefix));
  assert.equal(err.code, 'PROTOCOL_ERROR');
});

test('protocol codec - any unknown kind byte is UNKNOWN_MESSAGE', () => {
  const unknownKind = fc.integer({ min: 0, max: 255 }).filter((k) => !isMessageKind(k));
  fc.assert(
    fc.property(unknownKind, (kind) => {
      const buf = rawFrame({ kind, meta: packr.pack({ x: 1 }) });
      const err = caught(() => decoder().push(buf));
      assert.equal(err.code, 'UNKNOWN_MESSAGE');
      assert.deepStrictEqual(err.details, { kind });
    }),
    { numRuns: 100 },
  );
  assert.equal(
    caught(() => decoder().push(rawFrame({ kind: 0, meta: packr.pack(1) }))).code,
    'UNKNOWN_MESSAGE',
  );
  assert.equal(
    caught(() => decoder().push(rawFrame({ kind: 250, meta: packr.pack(1) }))).code,
    'UNKNOWN_MESSAGE',
  );
});

test('protocol codec - a meta or attachment length that disagrees with frameLength is a PROTOCOL_ERROR', () => {
  fc.assert(
    fc.property(
      frameArb.filter((f) => f.attachments.length > 0),
      fc.nat(),
      fc.integer({ min: 0, max: 0xffffffff }),
      (frame, which, value) => {
        const buf = encodeFrameToBuffer(packr, frame, MAX);
        // field 0 is metaLength at offset 12, field i > 0 the length of attachment i - 1
        const field = which % (frame.attachments.length + 1);
        const offset = field === 0 ? 12 : FRAME_HEADER_BYTES + 4 * (field - 1);
        // a change that stays inside the same 8-byte padding keeps the frame's size: it is
        // caught later, by msgpack or by the tensor's byte count against its shape
        const base = field === 0 ? FRAME_HEADER_BYTES + 4 * frame.attachments.length : 0;
        fc.pre(alignFrameOffset(base + buf.readUInt32LE(offset)) !== alignFrameOffset(base + value));
        buf.writeUInt32LE(value, offset);
        const err = caught(() => decoder().push(buf));
        assert.equal(err.code, 'PROTOCOL_ERROR');
        assert.match(err.message, /lengths are inconsistent/);
      },
    ),
    { numRuns: 200 },
  );
});

test('protocol codec - an attachment count whose lengths do not fit the frame is a PROTOCOL_ERROR', () => {
  const buf = rawFrame({ kind: MESSAGE_KIND.INFER_REQUEST, meta: packr.pack(1) });
  buf.writeUInt16LE(500, 6);
  const err = caught(() => decoder().push(buf));
  assert.equal(err.code, 'PROTOCOL_ERROR');
  assert.match(err.message, /INFER_REQUEST frame announces 500 attachments that do not fit/);
});

test('protocol codec - corrupt msgpack meta is a PROTOCOL_ERROR carrying the cause', () => {
  const corrupt = [
    // str32 announcing 4 GiB with nothing after it
    Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xff),
    // a map of 2 entries holding one key
    Uint8Array.of(0x82, 0xa1, 0x61),
    // two values where one is expected
    Uint8Array.of(0x01, 0x02),
  ];
  for (const meta of corrupt) {
    const err = caught(() => decoder().push(rawFrame({ kind: MESSAGE_KIND.HEARTBEAT, meta })));
    assert.equal(err.code, 'PROTOCOL_ERROR', hex(meta));
    assert.match(err.message, /HEARTBEAT frame has a corrupt msgpack body/);
    assert.ok(err.cause instanceof Error);
  }
});

test('protocol codec - meta made of the never-used msgpack byte 0xc1 is a PROTOCOL_ERROR', () => {
  const err = caught(() =>
    decoder().push(rawFrame({ kind: MESSAGE_KIND.HEARTBEAT, meta: Uint8Array.of(0xc1) })),
  );
  assert.equal(err.code, 'PROTOCOL_ERROR');
});

test('protocol codec - garbage bytes only ever raise an InfergridError, and the decoder stays failed', () => {
  // raw noise mostly fails at the length prefix or the attachment count; well-framed noise
  // and bit-flipped real frames get as far as msgpack
  const wellFramed = fc
    .record({
      kind: fc.constantFrom(...KINDS),
      meta: fc.uint8Array({ minLength: 1, maxLength: 60 }),
      attachments: fc.array(fc.uint8Array({ maxLength: 8 }), { maxLength: 2 }),
    })
    .map((o) => new Uint8Array(rawFrame(o)));
  const flipped = fc
    .record({
      frame: frameArb,
      flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }),
    })
    .map(({ frame, flips }) => {
      const buf = encodeFrameToBuffer(packr, frame, MAX);
      for (const [at, mask] of flips) {
        const i = at % buf.byteLength;
        buf[i] = buf[i]! ^ mask;
      }
      return new Uint8Array(buf);
    });
  fc.assert(
    fc.property(
      fc.oneof(fc.uint8Array({ maxLength: 300 }), wellFramed, flipped),
      fc.array(fc.nat(), { maxLength: 4 }),
      (garbage, cuts) => {
        const points = [...new Set(cuts.map((c) => c % (garbage.byteLength + 1)))].sort((a, b) => a - b);
        const bounds = [0, ...points, garbage.byteLength];
        const d = decoder(512);
        let failure: unknown;
        for (let i = 1; i < bounds.length && failure === undefined; i++) {
          try {
            d.push(garbage.subarray(bounds[i - 1], bounds[i]));
          } catch (err) {
            failure = err;
          }
        }
        if (failure === undefined) return;
        assert.ok(failure instanceof InfergridError, `threw ${String(failure)}`);
        assert.ok(['FRAME_TOO_LARGE', 'UNKNOWN_MESSAGE', 'PROTOCOL_ERROR'].includes(failure.code));
        assert.equal(
          caught(() => d.push(Uint8Array.of(1, 2, 3, 4))),
          failure,
        );
      },
    ),
    { numRuns: 500 },
  );
});

test('protocol codec - frames completed before a corrupt one are still returned by earlier pushes', () => {
  const good: Frame = { kind: MESSAGE_KIND.PING, flags: 0, requestId: 1, meta: { n: 1 }, attachments: [] };
  const d = decoder();
  assertSameFrames(d.push(encodeFrameToBuffer(packr, good, MAX)), [good]);
  const err = caught(() => d.push(rawFrame({ kind: 200, meta: packr.pack(1) })));
  assert.equal(err.code, 'UNKNOWN_MESSAGE');
  assert.equal(d.bufferedBytes, 0);
});

test('protocol codec - the decoder refuses a maxFrameBytes below the header size', () => {
  assert.throws(() => new FrameDecoder({ maxFrameBytes: FRAME_HEADER_BYTES - 1, packr }), RangeError);
  assert.throws(() => new FrameDecoder({ maxFrameBytes: 100.5, packr }), RangeError);
});

test('protocol codec - a frame assembled from several chunks gives aligned tensors, viewed without a copy', () => {
  for (const size of [12, 4096, 100_000]) {
    const values = Float64Array.from({ length: size }, (_, i) => i / 3);
    const buf = encodeFrameToBuffer(
      packr,
      {
        kind: MESSAGE_KIND.INFER_REQUEST,
        flags: 0,
        requestId: 1,
        meta: { n: size },
        attachments: [Uint8Array.of(1), new Uint8Array(values.buffer)],
      },
      MAX,
    );
    const d = decoder();
    d.push(buf.subarray(0, 7));
    const [frame] = d.push(buf.subarray(7));
    const bytes = frame!.attachments[1]!;
    assert.equal(bytes.byteOffset % 8, 0, `FP64 attachment of ${size} elements is 8-byte aligned`);
    const view = typedView('FP64', bytes);
    assert.equal(view.buffer, bytes.buffer, 'a view, not a copy');
    assert.deepEqual(view, values);
  }
});
