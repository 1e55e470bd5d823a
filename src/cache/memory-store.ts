/**
 * The in-memory tier: an LRU (the lru-cache package) bounded by bytes and entries, with a TTL
 * per entry. The default store, and the first tier in front of SQLite or Redis.
 */

import { LRUCache } from 'lru-cache';
import type { CacheStore, StoreStats } from './store.ts';

/** How often a full store may scan for expired entries, ms. */
const PURGE_INTERVAL_MS = 1000;

export interface MemoryStoreOptions {
  /** Most bytes held (values plus keys). */
  maxBytes: number;
  /** Most entries held. */
  maxEntries: number;
  /** Clock in ms, injectable for tests (lru-cache reads it for TTLs). */
  now?: () => number;
}

export class MemoryStore implements CacheStore {
  readonly name = 'memory';
  readonly #lru: LRUCache<string, Uint8Array>;
  readonly #now: () => number;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #evictions = 0;
  #purgedAt = Number.NEGATIVE_INFINITY;

  constructor(options: MemoryStoreOptions) {
    if (!(Number.isInteger(options.maxBytes) && options.maxBytes > 0))
      throw new RangeError('maxBytes must be a positive integer');
    if (!(Number.isInteger(options.maxEntries) && options.maxEntries > 0))
      throw new RangeError('maxEntries must be a positive integer');
    const now = options.now;
    this.#now = now ?? (() => performance.now());
    this.#maxEntries = options.maxEntries;
    this.#maxBytes = options.maxBytes;
    this.#lru = new LRUCache<string, Uint8Array>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (value, key) => Math.max(1, value.byteLength + key.length),
      // an injected clock is read as it is (no 1 ms debounce), shifted by one because
      // lru-cache takes a start time of 0 to mean "no TTL"
      ...(now ? { perf: { now: () => now() + 1 }, ttlResolution: 0 } : {}),
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.#evictions++;
      },
    });
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    return this.#lru.get(key);
  }

  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    // when full, drop what has expired (at most once a second: it is a scan) before evicting live entries
    const full =
      this.#lru.size >= this.#maxEntries ||
      this.#lru.calculatedSize + value.byteLength + key.length > this.#maxBytes;
    const now = this.#now();
    if (full && now - this.#purgedAt >= PURGE_INTERVAL_MS) {
      this.#purgedAt = now;
      this.#lru.purgeStale();
    }
    // an entry bigger than the whole budget is simply not kept
    this.#lru.set(key, value, ttlMs === undefined ? {} : { ttl: Math.max(1, Math.round(ttlMs)) });
  }

  async delete(key: string): Promise<boolean> {
    // an expired entry not yet dropped is not there
    const present = this.#lru.has(key);
    this.#lru.delete(key);
    return present;
  }

  async has(key: string): Promise<boolean> {
    return this.#lru.has(key);
  }

  async clear(prefix?: string): Promise<number> {
    // expired entries go first, uncounted: they were not there any more
    this.#lru.purgeStale();
    if (prefix === undefined) {
      const n = this.#lru.size;
      this.#lru.clear();
      return n;
    }
    let n = 0;
    for (const key of [...this.#lru.keys()]) {
      if (key.startsWith(prefix) && this.#lru.delete(key)) n++;
    }
    return n;
  }

  stats(): StoreStats {
    return {
      entries: this.#lru.size,
      bytes: this.#lru.calculatedSize,
      evictions: this.#evictions,
      errors: 0,
    };
  }

  async close(): Promise<void> {
    this.#lru.clear();
  }
}
