/**
 * The CacheStore contract, one suite run against every store: memory, SQLite, Redis (the shared
 * server at 127.0.0.1:6379, each test in its own namespace), and memory in front of SQLite.
 *
 * Time: memory and SQLite take an injected clock, so their TTL checks move it by hand. Redis
 * expires keys by its own wall clock, so its TTL checks use short real TTLs and poll `has` under
 * a generous deadline; the same real-time checks also run on the other stores with their
 * default clocks.
 *
 * Caps: memory (maxEntries/maxBytes) and SQLite (maxRows/maxBytes) evict the least recently
 * used entry themselves. Redis does not: its memory is bounded by the Redis server's own
 * `maxmemory` and eviction policy, so the cap checks are skipped for it. A tiered store has no
 * caps of its own either (each tier keeps its own), so they are skipped for it too.
 *
 * After the shared suite come the checks that only make sense for one store: an unreachable or
 * vanishing Redis (on a redis-server of our own, never the shared one), a corrupt SQLite file,
 * promotion between tiers, and the memory store's injected clock.
 */

import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, describe, test } from 'node:test';
import {
  type CacheStore,
  MemoryStore,
  RedisStore,
  type RedisStoreOptions,
  SqliteStore,
  TieredStore,
} from '../../src/cache/index.ts';
import { assertCode } from '../fixtures/assert.ts';
import { freePort, startRedisServer } from '../fixtures/redis-server.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const MiB = 1 << 20;
/** Caps big enough that the general checks (a 1 MiB value included) never evict. */
const ROOMY: Caps = { maxBytes: 8 * MiB, maxEntries: 10_000 };
/** An injected clock never starts at 0 (lru-cache reads a start time of 0 as "no TTL"; see the memory checks). */
const CLOCK_START_MS = 1_000_000;
/** How long a real-time check waits for Redis (or a default clock) to expire a 50 ms entry. */
const EXPIRY_DEADLINE_MS = 5_000;
/**
 * How far the injected clock moves between operations in the cap checks: SQLite orders rows by
 * access time, which it rewrites at most once a second, so operations must be well apart.
 */
const TICK_MS = 10_000;

interface Caps {
  maxBytes: number;
  /** maxEntries for memory, maxRows for SQLite. */
  maxEntries: number;
}

interface OpenOptions {
  caps?: Caps;
  /** Use the store's default clock instead of an injected one. */
  realTime?: boolean;
}

interface Opened {
  store: CacheStore;
  /** Moves the store's injected clock forward; absent when the store keeps real time. */
  advance?: (ms: number) => Promise<void>;
}

interface StoreKind {
  name: string;
  /** Opens a fresh, empty store and registers its cleanup (see `defer`). */
  open(t: TestContext, options?: OpenOptions): Promise<Opened>;
  /** Why the store keeps no entry or byte caps of its own, when it keeps none. */
  noCaps?: string;
  /** Why stats() cannot report entries and bytes, when it cannot. */
  noCounts?: string;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** Exact byte equality, with a short message instead of a megabyte-long diff. */
function assertBytes(actual: Uint8Array | undefined, expected: Uint8Array, what = 'value'): void {
  assert.ok(actual !== undefined, `${what}: expected ${expected.byteLength} bytes, got a miss`);
  assert.ok(actual instanceof Uint8Array, `${what}: expected a Uint8Array`);
  assert.equal(actual.byteLength, expected.byteLength, `${what}: length`);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const at = a.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `${what}: first differing byte at ${at}`);
}

/** Polls `condition` until it holds, failing with `what` after `deadlineMs`. */
async function waitFor(condition: () => Promise<boolean>, deadlineMs: number, what: string): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > until) assert.fail(`${what} within ${deadlineMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const cleanupStacks = new WeakMap<TestContext, (() => unknown)[]>();

/**
 * Registers a cleanup for the end of `t`; cleanups run last registered first (node:test runs
 * `after` hooks first registered first), so a store is closed before its directory goes.
 */
function defer(t: TestContext, cleanup: () => unknown): void {
  let stack = cleanupStacks.get(t);
  if (!stack) {
    const fresh: (() => unknown)[] = [];
    cleanupStacks.set(t, fresh);
    t.after(async () => {
      for (const fn of fresh.reverse()) await fn();
    });
    stack = fresh;
  }
  stack.push(cleanup);
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-cache-'));
  defer(t, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A port nothing listens on (listened on, then closed). */
function redisOptions(url: string): RedisStoreOptions {
  return { url, namespace: `test:${randomUUID()}:`, connectTimeoutMs: 2000, commandTimeoutMs: 500 };
}

// ---------------------------------------------------------------------------------------------
// The stores

function memoryStore(caps: Caps, now: (() => number) | undefined): MemoryStore {
  return new MemoryStore({ maxBytes: caps.maxBytes, maxEntries: caps.maxEntries, ...(now ? { now } : {}) });
}

function sqliteStore(t: TestContext, caps: Caps, now: (() => number) | undefined): SqliteStore {
  const store = new SqliteStore({
    path: join(tempDir(t), 'cache.db'),
    maxBytes: caps.maxBytes,
    maxRows: caps.maxEntries,
    sweepIntervalMs: 60_000,
    ...(now ? { now } : {}),
  });
  defer(t, () => store.close());
  return store;
}

const CLEAR_PREFIX = 'clear(prefix) removes only keys starting with the prefix, taken literally';
const OVERSIZE_OVERWRITE =
  'a value bigger than the byte cap is not kept, and the key no longer reads the old one';
const DELETE_EXPIRED = 'delete of an expired entry reports false (the key was not there)';
const CLEAR_EXPIRED = 'clear() counts only live entries, not expired ones';

const KINDS: StoreKind[] = [
  {
    name: 'memory',
    async open(t, { caps = ROOMY, realTime = false } = {}) {
      let now = CLOCK_START_MS;
      const store = memoryStore(caps, realTime ? undefined : () => now);
      defer(t, () => store.close());
      if (realTime) return { store };
      return {
        store,
        advance: async (ms) => {
          now += ms;
        },
      };
    },
  },
  {
    name: 'sqlite',
    async open(t, { caps = ROOMY, realTime = false } = {}) {
      let now = CLOCK_START_MS;
      const store = sqliteStore(t, caps, realTime ? undefined : () => now);
      if (realTime) return { store };
      return {
        store,
        advance: async (ms) => {
          now += ms;
        },
      };
    },
  },
  {
    name: 'redis',
    async open(t) {
      const store = await RedisStore.connect(redisOptions(REDIS_URL));
      defer(t, async () => {
        await store.clear();
        await store.close();
      });
      return { store };
    },
    noCaps:
      "Redis keeps no caps of its own: memory is bounded by the Redis server's maxmemory and eviction policy",
    noCounts: 'entries and bytes live in the Redis server, shared with other coordinators',
  },
  {
    name: 'memory+sqlite',
    async open(t, { caps = ROOMY, realTime = false } = {}) {
      let now = CLOCK_START_MS;
      const clock = realTime ? undefined : () => now;
      const memory = memoryStore(caps, clock);
      defer(t, () => memory.close());
      const store = new TieredStore([memory, sqliteStore(t, caps, clock)]);
      if (realTime) return { store };
      return {
        store,
        advance: async (ms) => {
          now += ms;
        },
      };
    },
    noCaps:
      "a tiered store keeps no caps of its own: each tier keeps its own, and the memory tier's hits do not " +
      "reach SQLite's recency, so which key a full tiered store drops is not one LRU (see each tier's checks)",
  },
];

// ---------------------------------------------------------------------------------------------
// The suite

function conformance(kind: StoreKind): void {
  const check = (title: string, fn: (t: TestContext) => Promise<void>): void => {
    test(`${kind.name} store - ${title}`, fn);
  };

  describe(`cache store conformance: ${kind.name}`, () => {
    check('get returns what set stored; has and delete agree', async (t) => {
      const { store } = await kind.open(t);
      await store.set('m@1:k', bytes(1, 2, 3));
      assertBytes(await store.get('m@1:k'), bytes(1, 2, 3));
      assert.equal(await store.has('m@1:k'), true);
      assert.equal(await store.delete('m@1:k'), true);
      assert.equal(await store.get('m@1:k'), undefined);
      assert.equal(await store.has('m@1:k'), false);
      assert.equal(await store.delete('m@1:k'), false, 'a second delete finds nothing');
    });

    check('missing keys read as misses, never as errors or near matches', async (t) => {
      const { store } = await kind.open(t);
      assert.equal(await store.get('nothing'), undefined);
      assert.equal(await store.has('nothing'), false);
      assert.equal(await store.delete('nothing'), false);
      await store.set('m@1:abc', bytes(9));
      for (const near of ['m@1:ab', 'm@1:abcd', 'M@1:abc', 'm@1:*', 'm@1:ab_', 'm@1:ab%']) {
        assert.equal(await store.get(near), undefined, near);
        assert.equal(await store.has(near), false, near);
      }
      assert.equal(store.stats().errors, 0);
    });

    check('overwriting a key replaces its value entirely', async (t) => {
      const { store } = await kind.open(t);
      await store.set('k', filled(100, 0xaa));
      await store.set('k', bytes(1, 2)); // shorter: no tail of the old value may survive
      assertBytes(await store.get('k'), bytes(1, 2));
      await store.set('k', filled(300, 0x55));
      assertBytes(await store.get('k'), filled(300, 0x55));
      if (!kind.noCounts) assert.equal(store.stats().entries, 1, 'still one entry');
    });

    check(
      'binary values round-trip exactly: zeros, 0xff, empty, 1 MiB, a view into a larger buffer',
      async (t) => {
        const { store } = await kind.open(t);
        const random = randomBytes(4096);
        random.set([0, 0, 0xff, 0xff, 0, 0xff], 0);
        random[random.length - 1] = 0;
        const zeros = new Uint8Array(512);
        const ones = filled(512, 0xff);
        const empty = new Uint8Array(0);
        const big = randomBytes(MiB);
        const backing = randomBytes(64);
        const view = backing.subarray(7, 19);
        const cases: [string, Uint8Array][] = [
          ['random', random],
          ['zeros', zeros],
          ['ones', ones],
          ['empty', empty],
          ['big', big],
          ['view', view],
        ];
        for (const [key, value] of cases) await store.set(key, value);
        for (const [key, value] of cases) {
          assertBytes(await store.get(key), value, key);
          assert.equal(await store.has(key), true, `${key} is there`);
        }
      },
    );

    check('clear() removes everything and returns how many', async (t) => {
      const { store } = await kind.open(t);
      for (const key of ['a@1:x', 'b@1:y', 'c@2:z']) await store.set(key, bytes(1));
      assert.equal(await store.clear(), 3);
      for (const key of ['a@1:x', 'b@1:y', 'c@2:z']) assert.equal(await store.has(key), false, key);
      if (!kind.noCounts) assert.deepEqual([store.stats().entries, store.stats().bytes], [0, 0]);
      assert.equal(await store.clear(), 0, 'nothing left to clear');
    });

    check(CLEAR_PREFIX, async (t) => {
      const { store } = await kind.open(t);
      const keys = [
        'm1@1:a',
        'm1@1:b',
        'm1@2:c',
        'm10@1:d',
        'x-m1@1:e',
        'a_b:f',
        'aXb:g',
        'm[x]*?@1:h',
        'mx@1:i',
      ];
      for (const key of keys) await store.set(key, bytes(key.length));
      const present = async (): Promise<string[]> => {
        const out: string[] = [];
        for (const key of keys) if (await store.has(key)) out.push(key);
        return out;
      };

      assert.equal(await store.clear('m1@1:'), 2);
      assert.deepEqual(await present(), [
        'm1@2:c',
        'm10@1:d',
        'x-m1@1:e',
        'a_b:f',
        'aXb:g',
        'm[x]*?@1:h',
        'mx@1:i',
      ]);
      assert.equal(await store.clear('a_b'), 1, '"_" is not a wildcard');
      assert.equal(await store.clear('m[x]*?'), 1, '"[", "*" and "?" are not glob characters');
      assert.equal(await store.clear('no-such-model@'), 0);
      assert.deepEqual(await present(), ['m1@2:c', 'm10@1:d', 'x-m1@1:e', 'aXb:g', 'mx@1:i']);
      assertBytes(await store.get('m10@1:d'), bytes('m10@1:d'.length), 'a survivor keeps its value');
      if (!kind.noCounts) assert.equal(store.stats().entries, 5);
    });

    check('an entry expires after its TTL and not before (injected clock)', async (t) => {
      const { store, advance } = await kind.open(t);
      if (!advance)
        return t.skip(
          'no injectable clock: Redis expires keys by its own wall clock (see the real-time check)',
        );
      await store.set('short', bytes(1), 1000);
      await store.set('long', bytes(2), 5000);
      await store.set('forever', bytes(3));
      await advance(999);
      assert.equal(await store.has('short'), true, '999 ms into a 1000 ms TTL');
      assertBytes(await store.get('short'), bytes(1));
      await advance(2);
      assert.equal(await store.has('short'), false, '1001 ms into a 1000 ms TTL');
      assert.equal(await store.get('short'), undefined);
      assertBytes(await store.get('long'), bytes(2));
      await advance(4000);
      assert.equal(await store.get('long'), undefined, '5001 ms into a 5000 ms TTL');
      await advance(1_000_000_000);
      assertBytes(await store.get('forever'), bytes(3), 'no TTL: never expires');
    });

    check(
      'overwriting restarts the TTL, and an overwrite without a TTL removes it (injected clock)',
      async (t) => {
        const { store, advance } = await kind.open(t);
        if (!advance)
          return t.skip(
            'no injectable clock: Redis expires keys by its own wall clock (see the real-time check)',
          );
        await store.set('renewed', bytes(1), 1000);
        await store.set('unbounded', bytes(1), 1000);
        await advance(800);
        await store.set('renewed', bytes(2), 1000);
        await store.set('unbounded', bytes(2));
        await advance(800);
        assertBytes(await store.get('renewed'), bytes(2), '800 ms into the renewed TTL');
        await advance(300);
        assert.equal(await store.get('renewed'), undefined, '1100 ms into the renewed TTL');
        await advance(1_000_000);
        assertBytes(await store.get('unbounded'), bytes(2));
      },
    );

    check('entries expire in real time; an overwrite without a TTL removes it', async (t) => {
      const { store } = await kind.open(t, { realTime: true });
      await store.set('kept', bytes(1), 600_000);
      await store.set('forever', bytes(2));
      await store.set('unbounded', bytes(3), 50);
      await store.set('unbounded', bytes(4));
      // set after the overwrite above: once this one has expired, the first TTL of "unbounded" has too
      await store.set('short', bytes(5), 50);
      await waitFor(
        async () => !(await store.has('short')),
        EXPIRY_DEADLINE_MS,
        'a 50 ms entry did not expire',
      );
      assert.equal(await store.get('short'), undefined);
      assertBytes(await store.get('unbounded'), bytes(4));
      assertBytes(await store.get('kept'), bytes(1));
      assertBytes(await store.get('forever'), bytes(2));
    });

    check(DELETE_EXPIRED, async (t) => {
      const { store, advance } = await kind.open(t);
      await store.set('short', bytes(1), 50);
      if (advance) await advance(1000);
      else
        await waitFor(
          async () => !(await store.has('short')),
          EXPIRY_DEADLINE_MS,
          'a 50 ms entry did not expire',
        );
      assert.equal(await store.has('short'), false);
      assert.equal(await store.delete('short'), false);
    });

    check(CLEAR_EXPIRED, async (t) => {
      const { store, advance } = await kind.open(t);
      await store.set('live', bytes(1));
      await store.set('short', bytes(2), 50);
      if (advance) await advance(1000);
      else
        await waitFor(
          async () => !(await store.has('short')),
          EXPIRY_DEADLINE_MS,
          'a 50 ms entry did not expire',
        );
      assert.equal(await store.clear(), 1);
    });

    check('an entry cap evicts the least recently used entry (get refreshes, has does not)', async (t) => {
      if (kind.noCaps) return t.skip(kind.noCaps);
      const { store, advance } = await kind.open(t, { caps: { maxBytes: MiB, maxEntries: 3 } });
      const tick = async (): Promise<void> => advance?.(TICK_MS);
      for (const key of ['a', 'b', 'c']) {
        await store.set(key, bytes(1));
        await tick();
      }
      assertBytes(await store.get('a'), bytes(1)); // recency now: b, c, a
      await tick();
      await store.set('d', bytes(1));
      await tick();
      assert.equal(await store.has('b'), false, 'b was the least recently used');
      for (const key of ['a', 'c', 'd']) assert.equal(await store.has(key), true, key);
      assert.deepEqual([store.stats().entries, store.stats().evictions], [3, 1]);

      assert.equal(await store.has('c'), true); // recency still: c, a, d
      await tick();
      await store.set('e', bytes(1));
      assert.equal(await store.has('c'), false, 'has() did not make c recently used');
      for (const key of ['a', 'd', 'e']) assert.equal(await store.has(key), true, key);
      assert.deepEqual([store.stats().entries, store.stats().evictions], [3, 2]);
    });

    check(
      'a byte cap (values plus keys) evicts least recently used entries until the new one fits',
      async (t) => {
        if (kind.noCaps) return t.skip(kind.noCaps);
        const { store, advance } = await kind.open(t, { caps: { maxBytes: 100, maxEntries: 100 } });
        const tick = async (): Promise<void> => advance?.(TICK_MS);
        for (const key of ['k1', 'k2', 'k3']) {
          await store.set(key, filled(30, 1)); // 32 bytes each with its key
          await tick();
        }
        assert.deepEqual([store.stats().entries, store.stats().bytes], [3, 96]);
        assertBytes(await store.get('k1'), filled(30, 1)); // recency now: k2, k3, k1
        await tick();
        await store.set('k4', filled(30, 1));
        await tick();
        assert.equal(await store.has('k2'), false, 'k2 was the least recently used');
        for (const key of ['k1', 'k3', 'k4']) assert.equal(await store.has(key), true, key);
        assert.deepEqual([store.stats().entries, store.stats().bytes, store.stats().evictions], [3, 96, 1]);

        await store.set('k5', filled(62, 1)); // 64 bytes: two more must go (k3, then k1)
        assert.deepEqual(
          [await store.has('k3'), await store.has('k1'), await store.has('k4'), await store.has('k5')],
          [false, false, true, true],
        );
        assert.deepEqual([store.stats().entries, store.stats().bytes, store.stats().evictions], [2, 96, 3]);

        await store.set('huge', filled(99, 1)); // 103 bytes: more than the whole budget
        assert.equal(await store.has('huge'), false, 'bigger than the whole budget: not kept');
        assert.deepEqual(
          [await store.has('k4'), await store.has('k5')],
          [true, true],
          'and nothing evicted for it',
        );
        assert.equal(store.stats().evictions, 3);
      },
    );

    check(OVERSIZE_OVERWRITE, async (t) => {
      if (kind.name === 'redis') return t.skip(kind.noCaps);
      const { store } = await kind.open(t, { caps: { maxBytes: 100, maxEntries: 100 } });
      await store.set('k', bytes(1, 2, 3));
      await store.set('k', filled(200, 7));
      assert.equal(await store.get('k'), undefined, 'the old value must not be served for the new write');
      assert.equal(await store.has('k'), false);
    });

    check('stats() counts entries and bytes (values plus keys) as they change', async (t) => {
      if (kind.noCounts) return t.skip(kind.noCounts);
      const { store } = await kind.open(t);
      const none = { entries: 0, bytes: 0, evictions: 0, errors: 0 };
      assert.deepEqual(store.stats(), none);
      await store.set('a', filled(10, 1));
      await store.set('bb', filled(20, 1));
      assert.deepEqual(store.stats(), { ...none, entries: 2, bytes: 11 + 22 });
      await store.set('a', filled(5, 1));
      assert.deepEqual(store.stats(), { ...none, entries: 2, bytes: 6 + 22 });
      await store.delete('bb');
      assert.deepEqual(store.stats(), { ...none, entries: 1, bytes: 6 });
      await store.clear();
      assert.deepEqual(store.stats(), none);
    });
  });
}

for (const kind of KINDS) conformance(kind);

// ---------------------------------------------------------------------------------------------
// Redis: unreachable at start, gone at run time

test('redis store - connecting to a port nothing listens on rejects with an error naming the URL', async () => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  await assert.rejects(RedisStore.connect(redisOptions(url)), (err: unknown) => {
    assertCode(err, 'CONFIG_INVALID');
    assert.ok(err.message.includes(url), err.message);
    return true;
  });
});

test('redis store - opened while Redis is unreachable: plain get/set count a miss, strict ones reject', async () => {
  const url = `redis://127.0.0.1:${await freePort()}`;
  const store = RedisStore.open(redisOptions(url));
  try {
    const value = new Uint8Array([1, 2, 3]);
    assert.equal(await store.get('k'), undefined);
    await store.set('k', value);
    await assert.rejects(store.strict.get('k'));
    await assert.rejects(store.strict.set('k', value, 1000));
    assert.ok(store.stats().errors >= 4, `errors ${store.stats().errors}`);
  } finally {
    await store.close();
  }
});

/** Fails when `promise` has not settled within `ms`: "resolves as a miss" must not mean "hangs". */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

test('redis store - a Redis gone at run time makes every operation a miss, counted as an error', async (t) => {
  const redis = await startRedisServer(t);
  const store = await RedisStore.connect(redisOptions(redis.url));
  defer(t, () => store.close());
  await store.set('k', bytes(1, 2, 3));
  assertBytes(await store.get('k'), bytes(1, 2, 3));
  assert.equal(store.stats().errors, 0);

  redis.child.kill('SIGKILL');
  await redis.exited;

  const deadlineMs = 5_000;
  assert.equal(await within(deadlineMs, 'get', store.get('k')), undefined);
  await within(deadlineMs, 'set', store.set('k2', bytes(4)));
  assert.equal(await within(deadlineMs, 'has', store.has('k')), false);
  assert.equal(await within(deadlineMs, 'delete', store.delete('k')), false);
  assert.equal(await within(deadlineMs, 'clear', store.clear()), 0);
  assert.equal(store.stats().errors, 5, 'one error per failed operation');
});

test('redis store - pub/sub: a message reaches each subscriber of its channel in its namespace, until it unsubscribes', async (t) => {
  const options = redisOptions(REDIS_URL);
  let publisher: RedisStore;
  try {
    publisher = await RedisStore.connect(options);
  } catch (err) {
    return t.skip(`Redis is not reachable at ${REDIS_URL} (${(err as Error).message})`);
  }
  defer(t, () => publisher.close());
  const subscriber = await RedisStore.connect(options);
  defer(t, () => subscriber.close());
  const elsewhere = await RedisStore.connect(redisOptions(REDIS_URL)); // another namespace
  defer(t, () => elsewhere.close());
  const got: string[] = [];
  const twice: string[] = [];
  const arrived = (want: number) =>
    within(
      5000,
      `${want} messages`,
      (async () => {
        while (got.length < want) await new Promise((resolve) => setImmediate(resolve));
      })(),
    );
  const stop = await subscriber.pubSub.subscribe('ch', (m) => got.push(Buffer.from(m).toString()));
  const stopTwice = await subscriber.pubSub.subscribe('ch', (m) => twice.push(Buffer.from(m).toString()));
  const stopOther = await elsewhere.pubSub.subscribe('ch', () => assert.fail('another namespace heard it'));
  await subscriber.pubSub.subscribe('other', () => assert.fail('another channel heard it'));
  await publisher.pubSub.publish('ch', Buffer.from('one'));
  await arrived(1);
  assert.deepEqual(twice, ['one'], 'every handler of the channel');
  await stopTwice();
  await publisher.pubSub.publish('ch', Buffer.from('two'));
  await arrived(2);
  assert.deepEqual(got, ['one', 'two']);
  assert.deepEqual(twice, ['one'], 'an unsubscribed handler hears nothing more');
  await stop();
  await stopOther();
  // a tiered store offers its Redis tier's pub/sub
  const tiered = new TieredStore([new MemoryStore({ maxBytes: MiB, maxEntries: 10 }), subscriber]);
  assert.equal(tiered.pubSub, subscriber.pubSub);
  assert.equal(new TieredStore([new MemoryStore({ maxBytes: MiB, maxEntries: 10 })]).pubSub, undefined);
  assert.equal(publisher.stats().errors + subscriber.stats().errors, 0);
});

test('redis store - pub/sub after close is refused, and publishing to a Redis gone is an error, counted', async (t) => {
  const redis = await startRedisServer(t);
  const store = await RedisStore.connect(redisOptions(redis.url));
  defer(t, () => store.close());
  redis.child.kill('SIGKILL');
  await redis.exited;
  await assert.rejects(within(5000, 'publish', store.pubSub.publish('ch', bytes(1))));
  assert.equal(store.stats().errors, 1);
  await store.close();
  await assert.rejects(
    store.pubSub.subscribe('ch', () => {}),
    /closed/,
  );
});

// ---------------------------------------------------------------------------------------------
// SQLite: a damaged file, a restart

test('sqlite store - a file that is not a database is refused with an error naming the path', (t) => {
  const path = join(tempDir(t), 'garbage.db');
  const garbage = randomBytes(8192);
  garbage.write('not sqlite', 0);
  writeFileSync(path, garbage);
  assert.throws(
    () => new SqliteStore({ path, maxBytes: MiB, maxRows: 100, sweepIntervalMs: 60_000 }),
    (err: unknown) => {
      assertCode(err, 'CONFIG_INVALID');
      assert.ok(err.message.includes(path), err.message);
      return true;
    },
  );
});

test('sqlite store - a reopened file comes back warm, with TTLs still honoured', async (t) => {
  const path = join(tempDir(t), 'cache.db');
  let now = CLOCK_START_MS;
  const options = { path, maxBytes: MiB, maxRows: 100, sweepIntervalMs: 60_000, now: () => now };
  const first = new SqliteStore(options);
  defer(t, () => first.close());
  await first.set('kept', bytes(1, 2));
  await first.set('short', bytes(3), 1000);
  await first.close();

  now += 2000;
  const second = new SqliteStore(options);
  defer(t, () => second.close());
  assertBytes(await second.get('kept'), bytes(1, 2));
  assert.equal(await second.get('short'), undefined);
  assert.deepEqual(
    [second.stats().entries, second.stats().bytes],
    [1, 6],
    'the expired row was swept on open',
  );
});

// ---------------------------------------------------------------------------------------------
// Tiers

async function twoTiers(t: TestContext): Promise<{
  memory: MemoryStore;
  sqlite: SqliteStore;
  tiered: TieredStore;
  advance: (ms: number) => Promise<void>;
}> {
  let now = CLOCK_START_MS;
  const memory = memoryStore(ROOMY, () => now);
  defer(t, () => memory.close());
  const sqlite = sqliteStore(t, ROOMY, () => now);
  return {
    memory,
    sqlite,
    tiered: new TieredStore([memory, sqlite]),
    advance: async (ms) => {
      now += ms;
    },
  };
}

test('tiered store - a lower tier hit is returned and copied into the tier above', async (t) => {
  const { memory, sqlite, tiered } = await twoTiers(t);
  assert.equal(tiered.name, 'memory+sqlite');
  await sqlite.set('k', bytes(7, 8));
  assertBytes(await tiered.get('k'), bytes(7, 8));
  assertBytes(await memory.get('k'), bytes(7, 8), 'promoted into memory');
  assertBytes(await tiered.get('k'), bytes(7, 8));
  assert.deepEqual(tiered.hitsByTier, { memory: 1, sqlite: 1 });
  assert.equal(await tiered.delete('k'), true);
  assert.deepEqual([await memory.has('k'), await sqlite.has('k')], [false, false], 'deleted from every tier');
});

test('tiered store - an entry promoted from a lower tier still expires with its TTL', {}, async (t) => {
  const { memory, tiered, advance } = await twoTiers(t);
  await tiered.set('k', bytes(1), 1000);
  await memory.delete('k'); // as if the memory tier had evicted it
  assertBytes(await tiered.get('k'), bytes(1), 'served from SQLite and promoted');
  await advance(2000);
  assert.equal(await tiered.get('k'), undefined, '2000 ms into a 1000 ms TTL');
});

// ---------------------------------------------------------------------------------------------
// The memory store's injected clock

test('memory store - sees an injected clock move at once', {}, async () => {
  let now = CLOCK_START_MS;
  const store = new MemoryStore({ maxBytes: MiB, maxEntries: 10, now: () => now });
  await store.set('k', bytes(1), 100);
  assert.equal(await store.has('k'), true);
  now += 10_000;
  assert.equal(await store.has('k'), false, '10 s into a 100 ms TTL');
  assert.equal(await store.get('k'), undefined);
});

test('memory store - an entry set while the injected clock reads 0 still expires', {}, async () => {
  let now = 0;
  const store = new MemoryStore({ maxBytes: MiB, maxEntries: 10, now: () => now });
  await store.set('k', bytes(1), 100);
  now = 10_000;
  assert.equal(await store.has('k'), false, '10 s into a 100 ms TTL');
});

test('memory store - rejects caps that are not positive integers', () => {
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(
      () => new MemoryStore({ maxBytes: bad, maxEntries: 10 }),
      /maxBytes must be a positive integer/,
    );
    assert.throws(
      () => new MemoryStore({ maxBytes: 10, maxEntries: bad }),
      /maxEntries must be a positive integer/,
    );
  }
});
