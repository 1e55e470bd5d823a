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

/**
 * Fire-and-forget messages between the processes sharing a store (Redis pub/sub). Delivery is
 * at most once: a message sent while a subscriber is disconnected is lost, so a user keeps a
 * slower path (a key it reads periodically) for what must not be missed.
 */
export interface StorePubSub {
  /** Sends `message` to every current subscriber of `channel` (none: dropped). Throws when the store cannot be reached. */
  publish(channel: string, message: Uint8Array): Promise<void>;
  /**
   * Calls `onMessage` with each message published on `channel` from now on, until the returned
   * function is called. Resolves once the subscription is active; throws when it cannot be made.
   */
  subscribe(channel: string, onMessage: (message: Uint8Array) => void): Promise<() => Promise<void>>;
}

export interface CacheStore {
  /** "memory", "sqlite", "redis", or a tier list such as "memory+sqlite". */
  readonly name: string;
  /** Messages to the other processes sharing this store; only a shared store (Redis) has them. */
  readonly pubSub?: StorePubSub | undefined;
  /**
   * get and set that throw when the store fails, where the plain ones count a failure as a
   * miss (Redis): for state whose loss must be noticed, such as a cancel asked of another
   * coordinator.
   */
  readonly strict?:
    | {
        get(key: string): Promise<Uint8Array | undefined>;
        set(key: string, value: Uint8Array, ttlMs?: number): Promise<void>;
      }
    | undefined;
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
