/**
 * The in-memory tier: an LRU (the lru-cache package) bounded by bytes and entries, with a TTL
 * per entry. The default store, and the first tier in front of SQLite or Redis.
 */

import { LRUCache } from 'lru-cache';
import type { CacheStore, StoreStats } from './store.ts';

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
  #evictions = 0;

  constructor(options: MemoryStoreOptions) {
    if (!(Number.isInteger(options.maxBytes) && options.maxBytes > 0))
      throw new RangeError('maxBytes must be a positive integer');
    if (!(Number.isInteger(options.maxEntries) && options.maxEntries > 0))
      throw new RangeError('maxEntries must be a positive integer');
    this.#lru = new LRUCache<string, Uint8Array>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (value, key) => Math.max(1, value.byteLength + key.length),
      ...(options.now ? { perf: { now: options.now } } : {}),
      dispose: (_value, _key, reason) => {
        if (reason === 'evict') this.#evictions++;
      },
    });
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    return this.#lru.get(key);
  }

  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    // an entry bigger than the whole budget is simply not kept
    this.#lru.set(key, value, ttlMs === undefined ? {} : { ttl: Math.max(1, Math.round(ttlMs)) });
  }

  async delete(key: string): Promise<boolean> {
    return this.#lru.delete(key);
  }

  async has(key: string): Promise<boolean> {
    return this.#lru.has(key);
  }

  async clear(prefix?: string): Promise<number> {
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
