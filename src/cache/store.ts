/**
 * The contract every cache store keeps. Keys are strings (`<model>@<version>:<hash>`, so a
 * prefix names one model); values are bytes, stored and returned exactly. A store never
 * throws for an ordinary miss; a store that cannot be reached at run time (Redis gone) may
 * throw, and the response cache turns that into a miss, never a failed request.
 */

export interface StoreStats {
  /** Entries and bytes held now (as far as the store can tell cheaply). */
  entries: number;
  bytes: number;
  /** Entries dropped to stay within the store's caps. */
  evictions: number;
  /** Operations that failed (the store was unreachable). */
  errors: number;
}

export interface CacheStore {
  /** "memory", "sqlite", "redis", or a tier list such as "memory+sqlite". */
  readonly name: string;
  get(key: string): Promise<Uint8Array | undefined>;
  /** Like get, with the time the entry has left (undefined: no TTL); lets a tier above keep a copy no longer. */
  getEntry?(key: string): Promise<{ value: Uint8Array; ttlMs: number | undefined } | undefined>;
  /** `ttlMs` undefined: the store's default (memory and SQLite: none; Redis: none). */
  set(key: string, value: Uint8Array, ttlMs?: number): Promise<void>;
  /** True when the key was there. */
  delete(key: string): Promise<boolean>;
  has(key: string): Promise<boolean>;
  /** Removes every entry, or those whose key starts with `prefix`; returns how many when known. */
  clear(prefix?: string): Promise<number>;
  stats(): StoreStats;
  close(): Promise<void>;
}

/** The seed's key-value API over any store: get, set, delete, exists. */
export interface KvApi {
  get(key: string): Promise<Uint8Array | undefined>;
  set(key: string, value: Uint8Array, ttlMs?: number): Promise<void>;
  delete(key: string): Promise<boolean>;
  exists(key: string): Promise<boolean>;
}

export function kvApi(store: CacheStore): KvApi {
  return {
    get: (key) => store.get(key),
    set: (key, value, ttlMs) => store.set(key, value, ttlMs),
    delete: (key) => store.delete(key),
    exists: (key) => store.has(key),
  };
}
