/**
 * The cache's pieces on their own: the request key (what must and must not change it), the
 * entry codec (round trip, and refusing an entry made for another key), the response cache in
 * front of a memory store with a fake compute that finishes only when a test says so (hit and
 * miss, bypass and refresh, single-flight with each waiter's own deadline and cancellation, a
 * failing store, a mismatched entry), and the key-value API over a store.
 *
 * Nothing here sleeps to synchronise: computations are deferreds, and `flush()` only lets
 * promise callbacks already due run. The deadline checks use a short real timeout and wait on
 * the rejection itself.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { Packr } from 'msgpackr';
import { ENGINE_PARAMETERS } from '../../src/protocol/index.ts';
import {
  type CacheKey,
  type CacheRequest,
  type CacheStore,
  type CachedResponse,
  DECODED_MEMO_BYTES,
  EntryCodec,
  MemoryStore,
  ResponseCache,
  type StoreStats,
  cacheKey,
  kvApi,
} from '../../src/cache/index.ts';
import { InfergridError } from '../../src/errors.ts';
import type { Parameters } from '../../src/protocol/index.ts';
import { createLogger, silentLogger } from '../../src/telemetry/index.ts';
import { type Tensor, encodeBytesElements } from '../../src/tensor/index.ts';
import { isCode } from '../fixtures/assert.ts';

/** Long enough never to fire during a test: "no deadline of its own here". */
const NO_DEADLINE_MS = 600_000;

/** Lets every promise callback already due run; no time passes. */
function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------
// Requests and responses

function tensor(name: string, datatype: Tensor['datatype'], shape: number[], data: Uint8Array): Tensor {
  return { name, datatype, shape, data };
}

function f32(...values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

interface KeyInput {
  model: string;
  version: string;
  generation?: string;
  inputs: Tensor[];
  outputs: string[] | undefined;
  parameters: Parameters | undefined;
}

function baseRequest(): KeyInput {
  return {
    model: 'ocr',
    version: '1',
    inputs: [
      tensor('image', 'FP32', [1, 2], f32(0.25, -1)),
      tensor('lang', 'BYTES', [1], encodeBytesElements([Buffer.from('en')])),
      tensor('scale', 'INT64', [1], new Uint8Array(8).fill(3)),
    ],
    outputs: ['text', 'boxes'],
    parameters: { temperature: 0.5, mode: 'fast', beam: 4, lowercase: false },
  };
}

function keyOf(r: KeyInput): CacheKey {
  return cacheKey(r.model, r.version, r.generation ?? 'g1', r.inputs, r.outputs, r.parameters);
}

function response(tag: number, model = 'ocr'): CachedResponse {
  return {
    meta: { model, version: '1', outputs: [{ name: 'out', datatype: 'FP32', shape: [1] }] },
    outputs: [tensor('out', 'FP32', [1], f32(tag))],
  };
}

/** The tag `response(tag)` put into a response's output. */
function tagOf(r: CachedResponse): number {
  const data = r.outputs[0]!.data;
  return new Float32Array(Uint8Array.from(data).buffer)[0]!;
}

// ---------------------------------------------------------------------------------------------
// cacheKey

test('cache key - the same request gives the same key, whatever the order of inputs and parameters', () => {
  const base = keyOf(baseRequest());
  assert.match(base.key, /^ocr@1:[0-9a-f]{32}$/);
  assert.equal(base.digest.byteLength, 32);
  assert.equal(base.key.slice('ocr@1:'.length), base.digest.subarray(0, 16).toString('hex'));

  const again = keyOf(baseRequest());
  assert.equal(again.key, base.key);
  assert.ok(again.digest.equals(base.digest));

  const shuffled = baseRequest();
  shuffled.inputs.reverse();
  shuffled.parameters = { lowercase: false, beam: 4, mode: 'fast', temperature: 0.5 };
  assert.equal(keyOf(shuffled).key, base.key);

  const copied = baseRequest();
  copied.inputs = copied.inputs.map((t) => ({ ...t, data: Uint8Array.from(t.data), shape: [...t.shape] }));
  assert.equal(keyOf(copied).key, base.key, 'equal bytes in another buffer');

  const view = baseRequest();
  const backing = new Uint8Array(64).fill(0xee);
  backing.set(view.inputs[0]!.data, 13);
  view.inputs[0]!.data = backing.subarray(13, 13 + 8);
  assert.equal(keyOf(view).key, base.key, 'a view into a larger buffer hashes only its own bytes');
});

test('cache key - any change to model, version, generation, an input, the outputs or a model parameter changes it', () => {
  const variants: [string, (r: KeyInput) => void][] = [
    [
      'model',
      (r) => {
        r.model = 'ocr2';
      },
    ],
    [
      'generation (a reload with another config or model file)',
      (r) => {
        r.generation = 'g2';
      },
    ],
    [
      'version',
      (r) => {
        r.version = '2';
      },
    ],
    [
      'input name',
      (r) => {
        r.inputs[0]!.name = 'img';
      },
    ],
    [
      'input datatype (same bytes)',
      (r) => {
        r.inputs[0]!.datatype = 'INT32';
      },
    ],
    [
      'input shape (same element count)',
      (r) => {
        r.inputs[0]!.shape = [2, 1];
      },
    ],
    [
      'input rank (same element count)',
      (r) => {
        r.inputs[0]!.shape = [2];
      },
    ],
    [
      'first byte of an input',
      (r) => {
        r.inputs[0]!.data = Uint8Array.from(r.inputs[0]!.data, (b, i) => (i === 0 ? b ^ 1 : b));
      },
    ],
    [
      'last byte of an input',
      (r) => {
        r.inputs[2]!.data = Uint8Array.from(r.inputs[2]!.data, (b, i) => (i === 7 ? b + 1 : b));
      },
    ],
    [
      'a BYTES element',
      (r) => {
        r.inputs[1]!.data = encodeBytesElements([Buffer.from('de')]);
      },
    ],
    ['an extra input', (r) => r.inputs.push(tensor('extra', 'FP32', [1], f32(0)))],
    ['an input fewer', (r) => r.inputs.pop()],
    ['one more output requested', (r) => r.outputs!.push('scores')],
    ['one output fewer', (r) => r.outputs!.pop()],
    [
      'all outputs (none named)',
      (r) => {
        r.outputs = undefined;
      },
    ],
    [
      'an empty output list',
      (r) => {
        r.outputs = [];
      },
    ],
    [
      'a parameter value',
      (r) => {
        r.parameters!['temperature'] = 0.6;
      },
    ],
    [
      'a parameter type (4 vs "4")',
      (r) => {
        r.parameters!['beam'] = '4';
      },
    ],
    [
      'a parameter type (false vs "false")',
      (r) => {
        r.parameters!['lowercase'] = 'false';
      },
    ],
    [
      'a parameter added',
      (r) => {
        r.parameters!['seed'] = 7;
      },
    ],
    ['a parameter removed', (r) => delete r.parameters!['mode']],
    [
      'no parameters',
      (r) => {
        r.parameters = undefined;
      },
    ],
  ];
  const base = keyOf(baseRequest()).key;
  const seen = new Map<string, string>([[base, 'the base request']]);
  for (const [what, change] of variants) {
    const r = baseRequest();
    change(r);
    const { key } = keyOf(r);
    assert.ok(!seen.has(key), `changing ${what} gives the same key as ${seen.get(key)}`);
    seen.set(key, what);
  }
});

test("cache key - the engine's own parameters (priority, timeout, shard_key, cache, ...) do not change it", () => {
  for (const name of ['priority', 'timeout', 'timeout_ms', 'shard_key', 'cache']) {
    assert.ok(ENGINE_PARAMETERS.has(name), `${name} is an engine parameter`);
  }
  const base = keyOf(baseRequest()).key;
  for (const name of ENGINE_PARAMETERS) {
    for (const value of [1, 'x', true]) {
      const r = baseRequest();
      r.parameters![name] = value;
      assert.equal(keyOf(r).key, base, `${name}=${String(value)}`);
    }
  }
  const only = baseRequest();
  only.parameters = { priority: 3, shard_key: 'user-1', cache: 'refresh' };
  const none = baseRequest();
  none.parameters = undefined;
  assert.equal(keyOf(only).key, keyOf(none).key, 'only engine parameters is the same as none');
});

test('cache key - dimensions are hashed whole: [2^32 + 1, 0] and [1, 0] are different keys', () => {
  const withShape = (shape: number[]): CacheKey =>
    cacheKey('m', '1', 'g1', [tensor('x', 'FP32', shape, new Uint8Array(0))], undefined, undefined);
  assert.notEqual(withShape([2 ** 32 + 1, 0]).key, withShape([1, 0]).key);
  assert.notEqual(withShape([2 ** 40, 0]).key, withShape([0, 0]).key);
  assert.equal(withShape([2 ** 40, 0]).key, withShape([2 ** 40, 0]).key);
});

test('cache key - fields cannot run into one another (every field is length-prefixed)', () => {
  const pairs: [string, KeyInput, KeyInput][] = [];
  const data = f32(1);
  const inputs = (a: string, b: string): KeyInput => ({
    model: 'm',
    version: '1',
    inputs: [tensor(a, 'FP32', [1], data), tensor(b, 'FP32', [1], data)],
    outputs: undefined,
    parameters: undefined,
  });
  pairs.push(['input names "ab"+"c" vs "a"+"bc"', inputs('ab', 'c'), inputs('a', 'bc')]);
  const plain = (over: Partial<KeyInput>): KeyInput => ({
    model: 'm',
    version: '1',
    inputs: [tensor('x', 'UINT8', [2], Uint8Array.of(1, 2))],
    outputs: undefined,
    parameters: undefined,
    ...over,
  });
  pairs.push([
    'model/version "a@b"+"c" vs "a"+"b@c"',
    plain({ model: 'a@b', version: 'c' }),
    plain({ model: 'a', version: 'b@c' }),
  ]);
  pairs.push([
    'outputs ["ab","c"] vs ["a","bc"]',
    plain({ outputs: ['ab', 'c'] }),
    plain({ outputs: ['a', 'bc'] }),
  ]);
  pairs.push([
    'parameters {ab:"c"} vs {a:"bc"}',
    plain({ parameters: { ab: 'c' } }),
    plain({ parameters: { a: 'bc' } }),
  ]);
  pairs.push([
    'input data [1,2]+[3] vs [1]+[2,3]',
    plain({
      inputs: [tensor('x', 'UINT8', [2], Uint8Array.of(1, 2)), tensor('y', 'UINT8', [1], Uint8Array.of(3))],
    }),
    plain({
      inputs: [tensor('x', 'UINT8', [1], Uint8Array.of(1)), tensor('y', 'UINT8', [2], Uint8Array.of(2, 3))],
    }),
  ]);
  pairs.push([
    'shapes [1,2] vs [12]',
    plain({ inputs: [tensor('x', 'UINT8', [1, 2], Uint8Array.of(1, 2))] }),
    plain({ inputs: [tensor('x', 'UINT8', [12], Uint8Array.of(1, 2))] }),
  ]);
  for (const [what, a, b] of pairs) {
    const ka = keyOf(a);
    const kb = keyOf(b);
    assert.ok(!ka.digest.equals(kb.digest), `${what}: same digest`);
    assert.notEqual(ka.key, kb.key, `${what}: same key`);
  }
});

// ---------------------------------------------------------------------------------------------
// EntryCodec

function sampleResponse(): CachedResponse {
  return {
    meta: {
      model: 'ocr',
      version: '3',
      id: 'req-1',
      outputs: [],
      parameters: { sequence_id: 4, final: true },
    },
    outputs: [
      tensor('scores', 'FP32', [2, 2], f32(0, -0.5, 1e30, Number.NaN)),
      tensor('text', 'BYTES', [2], encodeBytesElements([Buffer.from('héllo'), new Uint8Array(0)])),
      tensor('empty', 'INT32', [0, 3], new Uint8Array(0)),
      tensor(
        'raw',
        'UINT8',
        [256],
        Uint8Array.from({ length: 256 }, (_, i) => i),
      ),
    ],
  };
}

function assertSameResponse(actual: CachedResponse | undefined, expected: CachedResponse): void {
  assert.ok(actual, 'decoded nothing');
  assert.deepEqual(actual.meta, {
    ...expected.meta,
    outputs: expected.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
  });
  assert.equal(actual.outputs.length, expected.outputs.length);
  for (const [i, t] of expected.outputs.entries()) {
    const got: Tensor = actual.outputs[i]!;
    assert.deepEqual([got.name, got.datatype, got.shape], [t.name, t.datatype, t.shape]);
    assert.ok(Buffer.from(got.data).equals(t.data), `${t.name}: bytes differ`);
  }
}

test('cache entry - a response round-trips through encode and decode with its digest', () => {
  const codec = new EntryCodec();
  const { digest } = keyOf(baseRequest());
  const original = sampleResponse();
  const bytes = codec.encode(digest, original);
  assertSameResponse(codec.decode(bytes, digest), original);
  assertSameResponse(new EntryCodec().decode(Uint8Array.from(bytes), digest), original);
});

test('cache entry - decode refuses an entry made for another digest (a key collision)', () => {
  const codec = new EntryCodec();
  const { digest } = keyOf(baseRequest());
  const bytes = codec.encode(digest, sampleResponse());
  const other = Buffer.from(digest);
  other[31]! ^= 1; // same 128-bit store key, different full digest
  assert.equal(codec.decode(bytes, other), undefined);
  assert.equal(codec.decode(bytes, digest.subarray(0, 16)), undefined, 'a truncated digest is not a match');
});

test('cache entry - the same bytes decode once: a hit after that reuses the response, digest and expiry still checked', () => {
  const codec = new EntryCodec();
  const { digest } = keyOf(baseRequest());
  const original = sampleResponse();
  const now = 1_000_000;
  const bytes = codec.encode(digest, original, now + 10);
  const first = codec.decode(bytes, digest, now);
  assertSameResponse(first, original);
  assert.equal(
    codec.decode(bytes, digest, now),
    first,
    'the second hit on the same bytes reuses the first decode',
  );
  assert.notEqual(
    codec.decode(Uint8Array.from(bytes), digest, now),
    first,
    'other bytes are decoded on their own',
  );
  const other = Buffer.from(digest);
  other[31]! ^= 1;
  assert.equal(
    codec.decode(bytes, other, now),
    undefined,
    'a reused decode is still checked against the digest',
  );
  assert.equal(codec.decode(bytes, digest, now + 10), undefined, 'and against its expiry');
});

test('cache entry - a large entry is decoded per hit, so the memo never pins more than its budget', () => {
  const codec = new EntryCodec();
  const { digest } = keyOf(baseRequest());
  // 6 × the outputs' bytes is reckoned for the decoded copy and its JSON text: over a sixteenth of the budget
  const big = {
    ...sampleResponse(),
    outputs: [tensor('y', 'UINT8', [DECODED_MEMO_BYTES / 64], new Uint8Array(DECODED_MEMO_BYTES / 64))],
  };
  const bytes = codec.encode(digest, big);
  const first = codec.decode(bytes, digest);
  assert.ok(first);
  assert.notEqual(codec.decode(bytes, digest), first, 'decoded again, not kept');
});

test('cache key - a dimension that is not a 64-bit unsigned integer is refused, never truncated into another key', () => {
  for (const d of [1.5, Number.NaN, -1, 2 ** 64, Number.POSITIVE_INFINITY])
    assert.throws(
      () => cacheKey('m', '1', 'g1', [tensor('x', 'FP32', [d, 5], new Uint8Array(0))], undefined, undefined),
      RangeError,
      String(d),
    );
});

test('cache entry - decode refuses garbage, other formats and damaged entries instead of throwing', () => {
  const codec = new EntryCodec();
  const { digest } = keyOf(baseRequest());
  const packr = new Packr({ moreTypes: true, useRecords: false, mapsAsObjects: true });
  const good = { v: 1, d: digest, m: { model: 'm', version: '1', outputs: [] }, b: [] };
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['random bytes', randomBytes(257)],
    ['a msgpack string', packr.pack('hello')],
    ['msgpack nil', packr.pack(null)],
    ['another format version', packr.pack({ ...good, v: 2 })],
    ['a digest that is not bytes', packr.pack({ ...good, d: digest.toString('hex') })],
    [
      'an attachment too short for its tensor',
      packr.pack({
        ...good,
        m: { ...good.m, outputs: [{ name: 'out', datatype: 'FP32', shape: [2] }] },
        b: [new Uint8Array(3)],
      }),
    ],
    [
      'fewer attachments than tensors',
      packr.pack({
        ...good,
        m: { ...good.m, outputs: [{ name: 'out', datatype: 'FP32', shape: [1] }] },
        b: [],
      }),
    ],
  ];
  for (const [what, bytes] of cases) assert.equal(codec.decode(bytes, digest), undefined, what);
  const truncated = codec.encode(digest, sampleResponse());
  assert.equal(
    codec.decode(truncated.subarray(0, truncated.byteLength - 10), digest),
    undefined,
    'truncated',
  );
  assert.ok(codec.decode(packr.pack(good), digest), 'the hand-made good entry itself decodes');
});

// ---------------------------------------------------------------------------------------------
// ResponseCache

class Deferred<T> {
  readonly promise: Promise<T>;
  resolve!: (value: T) => void;
  reject!: (err: unknown) => void;
  constructor() {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }
}

interface ComputeCall {
  signal: AbortSignal;
  result: Deferred<CachedResponse>;
}

/** A compute function that records each call and finishes only when the test settles its deferred. */
class FakeCompute {
  readonly calls: ComputeCall[] = [];
  #waiting: { n: number; resolve: () => void }[] = [];

  readonly fn = (signal: AbortSignal): Promise<CachedResponse> => {
    const call = { signal, result: new Deferred<CachedResponse>() };
    this.calls.push(call);
    for (const w of this.#waiting.filter((w) => this.calls.length >= w.n)) w.resolve();
    return call.result.promise;
  };

  /** Resolves with the nth call (1-based) once it has been made. */
  async call(n: number): Promise<ComputeCall> {
    if (this.calls.length < n) await new Promise<void>((resolve) => this.#waiting.push({ n, resolve }));
    return this.calls[n - 1]!;
  }
}

/** Wraps a store, counting calls and optionally failing or holding its operations. */
class SpyStore implements CacheStore {
  readonly name = 'spy';
  readonly inner: CacheStore;
  gets = 0;
  sets: { key: string; ttlMs: number | undefined }[] = [];
  failGet: Error | undefined;
  failSet: Error | undefined;
  /** When set, set() waits for it before writing. */
  holdSet: Promise<void> | undefined;

  constructor(inner: CacheStore = new MemoryStore({ maxBytes: 1 << 20, maxEntries: 1000 })) {
    this.inner = inner;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    this.gets++;
    if (this.failGet) throw this.failGet;
    return this.inner.get(key);
  }
  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    this.sets.push({ key, ttlMs });
    if (this.failSet) throw this.failSet;
    if (this.holdSet) await this.holdSet;
    return this.inner.set(key, value, ttlMs);
  }
  delete(key: string): Promise<boolean> {
    return this.inner.delete(key);
  }
  has(key: string): Promise<boolean> {
    return this.inner.has(key);
  }
  clear(prefix?: string): Promise<number> {
    return this.inner.clear(prefix);
  }
  stats(): StoreStats {
    return this.inner.stats();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

function request(over: Partial<CacheRequest> = {}): CacheRequest {
  return {
    model: 'ocr',
    key: keyOf(baseRequest()),
    ttlMs: undefined,
    mode: 'normal',
    timeoutMs: NO_DEADLINE_MS,
    ...over,
  };
}

const ZERO_STATS = {
  hits: 0,
  misses: 0,
  joins: 0,
  bypasses: 0,
  refreshes: 0,
  stores: 0,
  rejectedEntries: 0,
  storeErrors: 0,
};

/** Runs one request to completion with a compute that answers `tag` at once. */
async function runAnswering(cache: ResponseCache, tag: number, over: Partial<CacheRequest> = {}) {
  return cache.run(request(over), async () => response(tag));
}

test('response cache - a miss computes once and stores; the same request then hits without computing', async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  const compute = new FakeCompute();
  const first = cache.run(request(), compute.fn);
  (await compute.call(1)).result.resolve(response(7));
  const miss = await first;
  assert.equal(miss.outcome, 'miss');
  assert.equal(tagOf(miss.response), 7);
  assert.equal(cache.inFlight, 0);
  assert.equal(await store.has(request().key.key), true, 'stored under the request key');

  const hit = await cache.run(request(), compute.fn);
  assert.equal(hit.outcome, 'hit');
  assert.equal(tagOf(hit.response), 7);
  assert.equal(compute.calls.length, 1, 'the hit did not compute');
  assert.deepEqual(cache.stats(), { ocr: { ...ZERO_STATS, misses: 1, hits: 1, stores: 1 } });
});

test('response cache - bypass neither reads nor writes the store, and joins no computation', async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  await runAnswering(cache, 1); // an entry is there
  const gets = store.gets;
  const sets = store.sets.length;

  const bypass = await runAnswering(cache, 2, { mode: 'bypass' });
  assert.equal(bypass.outcome, 'bypass');
  assert.equal(tagOf(bypass.response), 2, 'computed, not the stored entry');
  assert.deepEqual([store.gets, store.sets.length], [gets, sets], 'no store access');
  assert.equal(tagOf((await runAnswering(cache, 3)).response), 1, 'the stored entry is unchanged');

  // with an identical request being computed, a bypass still computes on its own
  const other = request({ key: keyOf({ ...baseRequest(), version: '9' }) });
  const compute = new FakeCompute();
  const normal = cache.run(other, compute.fn);
  await compute.call(1);
  const bypassing = cache.run({ ...other, mode: 'bypass' }, compute.fn);
  const second = await compute.call(2);
  second.result.resolve(response(5));
  assert.equal(tagOf((await bypassing).response), 5);
  compute.calls[0]!.result.resolve(response(4));
  assert.equal(tagOf((await normal).response), 4);
  assert.equal(cache.stats()['ocr']!.bypasses, 2);
});

test('response cache - refresh recomputes even on a hit and overwrites the entry', async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  await runAnswering(cache, 1);
  const refreshed = await runAnswering(cache, 2, { mode: 'refresh' });
  assert.equal(refreshed.outcome, 'refresh');
  assert.equal(tagOf(refreshed.response), 2);
  const after = await runAnswering(cache, 3);
  assert.deepEqual([after.outcome, tagOf(after.response)], ['hit', 2]);
  assert.deepEqual(cache.stats()['ocr'], { ...ZERO_STATS, misses: 1, refreshes: 1, hits: 1, stores: 2 });
});

test('response cache - a failed computation is not stored, and the next request computes again', async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  const compute = new FakeCompute();
  const failing = cache.run(request(), compute.fn);
  (await compute.call(1)).result.reject(new InfergridError('BACKEND_ERROR', 'the model threw'));
  await assert.rejects(failing, isCode('BACKEND_ERROR', /the model threw/));
  assert.equal(store.sets.length, 0, 'nothing written');
  assert.equal(await store.has(request().key.key), false);
  assert.equal(cache.inFlight, 0);

  const retry = cache.run(request(), compute.fn);
  (await compute.call(2)).result.resolve(response(8));
  assert.deepEqual([(await retry).outcome, tagOf((await retry).response)], ['miss', 8]);
  assert.deepEqual(cache.stats()['ocr'], { ...ZERO_STATS, misses: 2, stores: 1 });
});

test('response cache - 50 identical concurrent requests compute once: 1 miss, 49 joined, all answered', async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  const compute = new FakeCompute();
  const runs = Array.from({ length: 50 }, () => cache.run(request(), compute.fn));
  const call = await compute.call(1);
  await flush();
  assert.equal(compute.calls.length, 1);
  assert.equal(cache.inFlight, 1);
  assert.equal(cache.stats()['ocr']!.joins, 49, 'every other request joined before the answer');
  call.result.resolve(response(42));
  const results = await Promise.all(runs);
  assert.ok(results.every((r) => tagOf(r.response) === 42));
  const outcomes = results.map((r) => r.outcome);
  assert.deepEqual(
    [outcomes.filter((o) => o === 'miss').length, outcomes.filter((o) => o === 'joined').length],
    [1, 49],
  );
  assert.equal(call.signal.aborted, false);
  assert.equal(cache.inFlight, 0);
  assert.deepEqual(cache.stats()['ocr'], { ...ZERO_STATS, misses: 1, joins: 49, stores: 1 });
});

// the deadlines are 20 and 30 ms: a deadline not kept shows as this test's own timeout
test('response cache - each waiter keeps its own deadline; the computation goes on for the others', {
  timeout: 5_000,
}, async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  const compute = new FakeCompute();
  // wide gaps: on a busy machine the leader must not time out before the others have joined
  const leader = cache.run(request({ timeoutMs: 1_000 }), compute.fn);
  const call = await compute.call(1);
  const patient = cache.run(request(), compute.fn);
  const hasty = cache.run(request({ timeoutMs: 20 }), compute.fn);
  await assert.rejects(hasty, isCode('DEADLINE_EXCEEDED', /20 ms/));
  await assert.rejects(leader, isCode('DEADLINE_EXCEEDED', /1000 ms/));
  assert.equal(call.signal.aborted, false, 'one waiter is left: the computation goes on');
  call.result.resolve(response(9));
  const answered = await patient;
  assert.deepEqual([answered.outcome, tagOf(answered.response)], ['joined', 9]);
  assert.equal(compute.calls.length, 1);
  assert.equal((await runAnswering(cache, 0)).outcome, 'hit', 'and the answer was stored');
});

test('response cache - the shared computation is aborted only when every waiter has gone', async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  const compute = new FakeCompute();
  const clients = [new AbortController(), new AbortController(), new AbortController()];
  const runs = clients.map((c) => cache.run(request({ signal: c.signal }), compute.fn));
  const call = await compute.call(1);
  await flush();
  for (const [i, client] of clients.entries()) {
    assert.equal(call.signal.aborted, false, `${i} of 3 waiters gone`);
    client.abort(new InfergridError('CANCELLED', `client ${i} went away`));
    await assert.rejects(runs[i]!, isCode('CANCELLED', new RegExp(`client ${i} went away`)));
  }
  assert.equal(call.signal.aborted, true, 'all 3 gone');
  call.result.reject(call.signal.reason); // the computation reacts to its signal
  await flush();
  assert.equal(cache.inFlight, 0);
  assert.equal(compute.calls.length, 1);
  assert.equal(cache.stats()['ocr']!.stores, 0);
});

test('response cache - a waiter whose signal is already aborted leaves at once without cancelling the others', async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  const compute = new FakeCompute();
  const leader = cache.run(request(), compute.fn);
  const call = await compute.call(1);
  const gone = new AbortController();
  gone.abort(new Error('gone before it came'));
  await assert.rejects(cache.run(request({ signal: gone.signal }), compute.fn), isCode('CANCELLED'));
  assert.equal(call.signal.aborted, false);
  call.result.resolve(response(1));
  assert.equal(tagOf((await leader).response), 1);
});

test('response cache - a request arriving while an abandoned computation winds down starts a fresh one', {}, async () => {
  const cache = new ResponseCache(new SpyStore(), silentLogger());
  const compute = new FakeCompute();
  const client = new AbortController();
  const abandoned = cache.run(request({ signal: client.signal }), compute.fn);
  const first = await compute.call(1);
  client.abort();
  await assert.rejects(abandoned, isCode('CANCELLED'));
  assert.equal(first.signal.aborted, true);

  // the worker has not yet answered the cancel when an identical request comes in
  const fresh = cache.run(request(), compute.fn);
  await flush();
  first.result.reject(new InfergridError('CANCELLED', 'cancelled at the worker'));
  if (compute.calls.length < 2) {
    // what the bug does: it joined the abandoned computation; settle it either way
    await assert.rejects(fresh);
    assert.fail('the new request joined the abandoned computation and was cancelled with it');
  }
  compute.calls[1]!.result.resolve(response(3));
  assert.equal(tagOf((await fresh).response), 3);
});

test('response cache - the answer does not wait for the store write', {}, async () => {
  const store = new SpyStore();
  const writeDone = new Deferred<void>();
  store.holdSet = writeDone.promise;
  const cache = new ResponseCache(store, silentLogger());
  const compute = new FakeCompute();
  let answered = false;
  const run = cache.run(request(), compute.fn).then((r) => {
    answered = true;
    return r;
  });
  (await compute.call(1)).result.resolve(response(6));
  await flush();
  const answeredBeforeWrite = answered;
  writeDone.resolve();
  assert.equal(tagOf((await run).response), 6);
  assert.equal(answeredBeforeWrite, true, 'the request was answered only after the store write finished');
});

test('response cache - a store whose reads and writes fail is a miss: the request succeeds, errors counted and logged', async () => {
  const store = new SpyStore();
  store.failGet = new Error('redis gone (get)');
  store.failSet = new Error('redis gone (set)');
  const lines: string[] = [];
  const logger = createLogger({
    level: 'warn',
    name: 'test',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    }),
  });
  const cache = new ResponseCache(store, logger);
  const first = await runAnswering(cache, 4);
  assert.deepEqual([first.outcome, tagOf(first.response)], ['miss', 4]);
  const second = await runAnswering(cache, 5);
  assert.deepEqual([second.outcome, tagOf(second.response)], ['miss', 5], 'nothing could be stored');
  assert.deepEqual(cache.stats()['ocr'], { ...ZERO_STATS, misses: 2, storeErrors: 4 });
  assert.equal(cache.inFlight, 0);
  assert.equal(lines.filter((l) => l.includes('redis gone (get)')).length, 2, lines.join(''));
  assert.equal(lines.filter((l) => l.includes('redis gone (set)')).length, 2, lines.join(''));
});

test('response cache - an entry under the key made for another digest (or damaged) is a miss and counted', async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  const req = request();
  const otherDigest = Buffer.from(req.key.digest);
  otherDigest[0]! ^= 0xff;
  await store.inner.set(req.key.key, new EntryCodec().encode(otherDigest, response(99)));

  const collided = await runAnswering(cache, 1);
  assert.deepEqual(
    [collided.outcome, tagOf(collided.response)],
    ['miss', 1],
    "never another request's answer",
  );
  assert.equal(cache.stats()['ocr']!.rejectedEntries, 1);
  const rewritten = await runAnswering(cache, 2);
  assert.deepEqual([rewritten.outcome, tagOf(rewritten.response)], ['hit', 1], 'the miss wrote a good entry');

  await store.inner.set(req.key.key, randomBytes(100));
  const damaged = await runAnswering(cache, 3);
  assert.deepEqual([damaged.outcome, tagOf(damaged.response)], ['miss', 3]);
  assert.equal(cache.stats()['ocr']!.rejectedEntries, 2);
});

test('response cache - the TTL of the request is the TTL of the entry written', async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  await runAnswering(cache, 1, { ttlMs: 1234 });
  await runAnswering(cache, 1, { ttlMs: undefined, key: keyOf({ ...baseRequest(), version: '2' }) });
  assert.deepEqual(
    store.sets.map((s) => s.ttlMs),
    [1234, undefined],
  );
});

test("response cache - clear(model) drops that model's entries only; stats are kept per model", async () => {
  const store = new SpyStore();
  const cache = new ResponseCache(store, silentLogger());
  const ocr = request();
  const ocr2 = request({ model: 'ocr2', key: keyOf({ ...baseRequest(), model: 'ocr2' }) });
  await cache.run(ocr, async () => response(1));
  await cache.run(ocr2, async () => response(2, 'ocr2'));
  assert.equal(await cache.clear('ocr'), 1);
  assert.equal(
    (await cache.run(ocr2, async () => response(0))).outcome,
    'hit',
    'ocr2 (whose name starts with ocr) kept',
  );
  assert.equal((await cache.run(ocr, async () => response(0))).outcome, 'miss');
  assert.deepEqual(cache.stats(), {
    ocr: { ...ZERO_STATS, misses: 2, stores: 2 },
    ocr2: { ...ZERO_STATS, misses: 1, hits: 1, stores: 1 },
  });
  assert.equal(await cache.clear(), 2);
});

// ---------------------------------------------------------------------------------------------
// kvApi

test('cache kv api - get, set (with its TTL), delete and exists go to the store', async () => {
  const store = new SpyStore();
  const kv = kvApi(store);
  assert.equal(await kv.get('k'), undefined);
  assert.equal(await kv.exists('k'), false);
  await kv.set('k', Uint8Array.of(1, 2, 3), 500);
  assert.deepEqual(store.sets, [{ key: 'k', ttlMs: 500 }]);
  assert.deepEqual(await kv.get('k'), Uint8Array.of(1, 2, 3));
  assert.equal(await kv.exists('k'), true);
  assert.equal(await kv.delete('k'), true);
  assert.equal(await kv.exists('k'), false);
  assert.equal(await kv.delete('k'), false);
  await kv.set('j', Uint8Array.of(4));
  assert.deepEqual(store.sets[1], { key: 'j', ttlMs: undefined });
});
