/**
 * The memory store against a small reference LRU written here, over random sequences of set,
 * get, has, delete, clear and time passing (an injected clock). After every operation its
 * result, `has` for every key, and stats() must match the model.
 *
 * The model follows lru-cache's documented behaviour as the store configures it, not an ideal
 * cache, so where the two differ the property holds and the difference is spelled out here:
 * - size of an entry: value bytes + key length (UTF-16 units), at least 1; an entry bigger than
 *   maxBytes is not kept, and setting one drops what the key held;
 * - recency: get (of a live entry) and set make an entry the most recent; has never does;
 * - TTL: an entry is stale once more than ttlMs has passed since its last set (at exactly ttlMs
 *   it is still live); set restarts the TTL, and a set without a TTL removes it; a TTL of 0 is
 *   taken as 1 ms;
 * - stale entries stay held until touched: get of a stale entry drops it (not an eviction), has
 *   reports false but leaves it, delete removes it and reports false; clear and clear(prefix)
 *   first drop every stale entry (uncounted), then remove and count live ones; a store that is
 *   full when a set comes drops its stale entries first (at most once a second of its clock),
 *   so a live entry is not evicted while an expired one holds its space;
 * - eviction: adding a key to a store at maxEntries evicts the least recently used entry; then
 *   least recently used entries go until the new bytes fit.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MemoryStore, type StoreStats } from '../../src/cache/index.ts';

/** Never 0: lru-cache takes a start time of 0 as "no TTL". */
const CLOCK_START_MS = 1_000_000;
const KEYS = ['a', 'b', 'c', 'ab', 'abc', 'long-key-d'] as const;
const PREFIXES = ['', 'a', 'ab', 'l', 'x'] as const;

interface ModelEntry {
  value: Uint8Array;
  size: number;
  /** 0: no TTL. */
  ttlMs: number;
  setAtMs: number;
}

/** An LRU with entry and byte caps and a TTL per entry; Map order is recency, oldest first. */
class LruModel {
  readonly #entries = new Map<string, ModelEntry>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #now: () => number;
  #bytes = 0;
  #evictions = 0;
  #purgedAt = Number.NEGATIVE_INFINITY;

  constructor(maxEntries: number, maxBytes: number, now: () => number) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
    this.#now = now;
  }

  #stale(e: ModelEntry): boolean {
    return e.ttlMs > 0 && this.#now() - e.setAtMs > e.ttlMs;
  }

  #remove(key: string): boolean {
    const e = this.#entries.get(key);
    if (!e) return false;
    this.#entries.delete(key);
    this.#bytes -= e.size;
    return true;
  }

  #evictOldest(): void {
    const [oldest] = this.#entries.keys();
    assert.ok(oldest !== undefined, 'model: nothing left to evict');
    this.#remove(oldest);
    this.#evictions++;
  }

  #purgeStale(): void {
    for (const [key, e] of [...this.#entries]) if (this.#stale(e)) this.#remove(key);
  }

  set(key: string, value: Uint8Array, ttlMs: number | undefined): void {
    const size = Math.max(1, value.byteLength + key.length);
    const full = this.#entries.size >= this.#maxEntries || this.#bytes + size > this.#maxBytes;
    if (full && this.#now() - this.#purgedAt >= 1000) {
      this.#purgedAt = this.#now();
      this.#purgeStale();
    }
    if (size > this.#maxBytes) {
      this.#remove(key);
      return;
    }
    // an overwrite leaves the count alone; its old bytes no longer count, and it is never the one evicted
    if (!this.#remove(key) && this.#entries.size === this.#maxEntries) this.#evictOldest();
    while (this.#bytes > this.#maxBytes - size) this.#evictOldest();
    const ttl = ttlMs === undefined ? 0 : Math.max(1, Math.round(ttlMs));
    this.#entries.set(key, { value, size, ttlMs: ttl, setAtMs: this.#now() });
    this.#bytes += size;
  }

  get(key: string): Uint8Array | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    this.#entries.delete(key);
    if (this.#stale(e)) {
      this.#bytes -= e.size;
      return undefined;
    }
    this.#entries.set(key, e); // now the most recent
    return e.value;
  }

  has(key: string): boolean {
    const e = this.#entries.get(key);
    return e !== undefined && !this.#stale(e);
  }

  delete(key: string): boolean {
    const live = this.has(key);
    this.#remove(key);
    return live;
  }

  clear(prefix: string | undefined): number {
    this.#purgeStale();
    let n = 0;
    for (const key of [...this.#entries.keys()]) {
      if ((prefix === undefined || key.startsWith(prefix)) && this.#remove(key)) n++;
    }
    return n;
  }

  stats(): StoreStats {
    return { entries: this.#entries.size, bytes: this.#bytes, evictions: this.#evictions, errors: 0 };
  }
}

type Op =
  | { op: 'set'; key: string; value: Uint8Array; ttlMs: number | undefined }
  | { op: 'get'; key: string }
  | { op: 'has'; key: string }
  | { op: 'delete'; key: string }
  | { op: 'clear'; prefix: string | undefined }
  | { op: 'advance'; ms: number };

const keyArb = fc.constantFrom(...KEYS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      key: keyArb,
      value: fc.uint8Array({ maxLength: 24 }),
      ttlMs: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('get' as const), key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('has' as const), key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), key: keyArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('clear' as const),
      prefix: fc.option(fc.constantFrom(...PREFIXES), { nil: undefined }),
    }),
  },
  {
    weight: 3,
    // small steps against small TTLs, so "exactly ttlMs old" and "ttlMs + 1 old" both come up often
    arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 6 }) }),
  },
);

const capsArb = fc.record({
  maxEntries: fc.integer({ min: 1, max: 5 }),
  maxBytes: fc.integer({ min: 1, max: 80 }),
});

function same(actual: Uint8Array | undefined, expected: Uint8Array | undefined): boolean {
  if (actual === undefined || expected === undefined) return actual === expected;
  return Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected);
}

test('memory store - matches a reference LRU with entry and byte caps and TTLs on an injected clock', async () => {
  await fc.assert(
    fc.asyncProperty(capsArb, fc.array(opArb, { maxLength: 40 }), async (caps, ops) => {
      let now = CLOCK_START_MS;
      const store = new MemoryStore({ ...caps, now: () => now });
      const model = new LruModel(caps.maxEntries, caps.maxBytes, () => now);
      for (const [i, step] of ops.entries()) {
        const at = `op ${i} ${JSON.stringify(step, (_k, v) => (v instanceof Uint8Array ? [...v] : v))}`;
        switch (step.op) {
          case 'set':
            await store.set(step.key, step.value, step.ttlMs);
            model.set(step.key, step.value, step.ttlMs);
            break;
          case 'get': {
            const actual = await store.get(step.key);
            const expected = model.get(step.key);
            assert.ok(
              same(actual, expected),
              `${at}: got ${actual && [...actual]}, model ${expected && [...expected]}`,
            );
            break;
          }
          case 'has':
            assert.equal(await store.has(step.key), model.has(step.key), at);
            break;
          case 'delete':
            assert.equal(await store.delete(step.key), model.delete(step.key), at);
            break;
          case 'clear':
            assert.equal(await store.clear(step.prefix), model.clear(step.prefix), at);
            break;
          case 'advance':
            now += step.ms;
            break;
        }
        // has() touches nothing in either, so every key can be looked at after every step
        for (const key of KEYS) assert.equal(await store.has(key), model.has(key), `${at}: has(${key})`);
        assert.deepEqual(store.stats(), model.stats(), `${at}: stats`);
      }
      await store.close();
    }),
    { numRuns: 300 },
  );
});

test('memory store - never holds more than its caps of live entries, and what it returns is what was set last', async () => {
  // independent of the model: the caps and "last write wins" hold for any sequence, no clock involved
  await fc.assert(
    fc.asyncProperty(
      capsArb,
      fc.array(fc.tuple(keyArb, fc.uint8Array({ maxLength: 24 })), { maxLength: 60 }),
      async (caps, writes) => {
        const store = new MemoryStore(caps);
        const last = new Map<string, Uint8Array>();
        for (const [key, value] of writes) {
          await store.set(key, value);
          last.set(key, value);
          const { entries, bytes } = store.stats();
          assert.ok(entries <= caps.maxEntries, `${entries} entries > ${caps.maxEntries}`);
          assert.ok(bytes <= caps.maxBytes, `${bytes} bytes > ${caps.maxBytes}`);
          const fits = Math.max(1, value.byteLength + key.length) <= caps.maxBytes;
          assert.equal(await store.has(key), fits, `the entry just set is there exactly when it fits`);
        }
        for (const key of KEYS) {
          const got = await store.get(key);
          if (got !== undefined)
            assert.ok(same(got, last.get(key)), `${key} returned a value other than its last`);
        }
      },
    ),
    { numRuns: 200 },
  );
});

test('memory store - a full store drops an expired entry before evicting a live one', {}, async () => {
  let now = CLOCK_START_MS;
  const store = new MemoryStore({ maxBytes: 1000, maxEntries: 2, now: () => now });
  await store.set('live', Uint8Array.of(1));
  await store.set('expired', Uint8Array.of(2), 10);
  now += 100;
  assert.equal(await store.has('expired'), false);
  await store.set('new', Uint8Array.of(3));
  assert.equal(await store.has('live'), true, 'the live entry was evicted while an expired one held space');
  assert.equal(await store.has('new'), true);
});
