/**
 * The shared tier: Redis through ioredis, so several coordinators share one cache. Entries live
 * under a versioned prefix (`ig:v1:cache:`), expire by Redis's own TTL and are stored as raw
 * bytes. Memory is bounded by the Redis server (its maxmemory and eviction policy), not here.
 *
 * At start-up an unreachable Redis is an error naming the URL (or, when `required` is false, a
 * warning and no Redis tier). At run time every failure counts as a miss: a cache that is down
 * must never fail a request.
 *
 * Pub/sub (`pubSub`) rides on a second connection, opened only when something first subscribes
 * (a subscribed Redis connection can send nothing else); ioredis subscribes again after a
 * reconnect, and what was published in between is lost, as the StorePubSub contract says.
 * Channels live under the same namespace as keys (`<namespace>ig:v1:cache:<channel>`).
 */

import type { Redis } from 'ioredis';
import { InfergridError } from '../errors.ts';
import { failFastRedis } from '../util/redis.ts';
import type { CacheStore, StorePubSub, StoreStats } from './store.ts';

export const REDIS_PREFIX = 'ig:v1:cache:';

export interface RedisStoreOptions {
  url: string;
  /** Prepended to REDIS_PREFIX, e.g. to keep tests or tenants apart. */
  namespace?: string;
  connectTimeoutMs: number;
  /** Per-command timeout, ms: a slow Redis is treated like a gone one. */
  commandTimeoutMs: number;
}

export class RedisStore implements CacheStore {
  readonly name = 'redis';
  readonly url: string;
  readonly #redis: Redis;
  readonly #prefix: string;
  #errors = 0;
  /** The subscriber connection, once something subscribed. */
  #subscriber: Promise<Redis> | undefined;
  /** Handlers by full channel name. */
  readonly #handlers = new Map<string, Set<(message: Uint8Array) => void>>();
  #closed = false;
  readonly pubSub: StorePubSub = {
    publish: async (channel, message) => {
      const bytes = Buffer.from(message.buffer, message.byteOffset, message.byteLength);
      try {
        await this.#redis.publish(this.#prefix + channel, bytes);
      } catch (err) {
        this.#errors++;
        throw err;
      }
    },
    subscribe: (channel, onMessage) => this.#subscribe(this.#prefix + channel, onMessage),
  };

  private constructor(redis: Redis, options: RedisStoreOptions) {
    this.#redis = redis;
    this.url = options.url;
    this.#prefix = `${options.namespace ?? ''}${REDIS_PREFIX}`;
  }

  async #subscribe(channel: string, onMessage: (message: Uint8Array) => void): Promise<() => Promise<void>> {
    if (this.#closed) throw new InfergridError('UNAVAILABLE', `cache store redis ${this.url} is closed`);
    this.#subscriber ??= this.#openSubscriber();
    let subscriber: Redis;
    try {
      subscriber = await this.#subscriber;
    } catch (err) {
      this.#subscriber = undefined;
      this.#errors++;
      throw err;
    }
    let handlers = this.#handlers.get(channel);
    if (!handlers) {
      handlers = new Set();
      this.#handlers.set(channel, handlers);
    }
    // a handler set before SUBSCRIBE answers sees every message from then on
    handlers.add(onMessage);
    if (handlers.size === 1) {
      try {
        await subscriber.subscribe(channel);
      } catch (err) {
        handlers.delete(onMessage);
        if (this.#handlers.get(channel)?.size === 0) this.#handlers.delete(channel);
        this.#errors++;
        throw err;
      }
    }
    return async () => {
      const set = this.#handlers.get(channel);
      if (!set?.delete(onMessage) || set.size > 0) return;
      this.#handlers.delete(channel);
      await subscriber.unsubscribe(channel).catch(() => {
        this.#errors++;
      });
    };
  }

  async #openSubscriber(): Promise<Redis> {
    // the same options as the command connection, queueing while it reconnects (SUBSCRIBE is replayed)
    const subscriber = this.#redis.duplicate({ lazyConnect: true, enableOfflineQueue: true });
    subscriber.on('error', () => {}); // reported through the subscribe calls that fail
    subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      const handlers = this.#handlers.get(channel.toString());
      if (!handlers) return;
      for (const handler of handlers) {
        try {
          handler(message);
        } catch {
          // a subscriber's own failure must not break delivery to the others
          this.#errors++;
        }
      }
    });
    try {
      await subscriber.connect();
    } catch (err) {
      subscriber.disconnect();
      throw err;
    }
    return subscriber;
  }

  /** Connects (within connectTimeoutMs) or throws an error naming the URL. */
  static async connect(options: RedisStoreOptions): Promise<RedisStore> {
    const redis = RedisStore.#client(options, true);
    try {
      await redis.connect();
      await redis.ping();
    } catch (err) {
      redis.disconnect();
      throw new InfergridError(
        'CONFIG_INVALID',
        `cache store redis: cannot reach ${options.url}: ${(err as Error).message} (start Redis, fix cache.redis.url, or set cache.redis.required: false)`,
        { cause: err },
      );
    }
    return new RedisStore(redis, options);
  }

  /**
   * A store that connects in the background and keeps reconnecting: for state that must not
   * stop a start while Redis is down (the cluster's asynchronous requests); its commands fail,
   * and count as misses, until Redis answers.
   */
  static open(options: RedisStoreOptions): RedisStore {
    return new RedisStore(RedisStore.#client(options, false), options);
  }

  static #client(options: RedisStoreOptions, lazyConnect: boolean): Redis {
    return failFastRedis(options, { lazyConnect });
  }

  async #try<T>(op: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await op();
    } catch {
      this.#errors++;
      return fallback;
    }
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.#try(() => this.#get(key), undefined);
  }

  readonly strict = {
    get: (key: string) => this.#counted(this.#get(key)),
    set: (key: string, value: Uint8Array, ttlMs?: number) => this.#counted(this.#set(key, value, ttlMs)),
  };

  async #counted<T>(op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (err) {
      this.#errors++;
      throw err;
    }
  }

  async #get(key: string): Promise<Uint8Array | undefined> {
    return (await this.#redis.getBuffer(this.#prefix + key)) ?? undefined;
  }

  async #set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    const bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (ttlMs === undefined) await this.#redis.set(this.#prefix + key, bytes);
    else await this.#redis.set(this.#prefix + key, bytes, 'PX', Math.max(1, Math.round(ttlMs)));
  }

  getEntry(key: string): Promise<{ value: Uint8Array; ttlMs: number | undefined } | undefined> {
    return this.#try(async () => {
      // one round trip for the value and what its TTL has left
      const results = await this.#redis
        .multi()
        .getBuffer(this.#prefix + key)
        .pttl(this.#prefix + key)
        .exec();
      const value = results?.[0]?.[1] as Buffer | null | undefined;
      const pttl = results?.[1]?.[1] as number | undefined;
      if (!value) return undefined;
      return { value, ttlMs: typeof pttl === 'number' && pttl > 0 ? pttl : undefined };
    }, undefined);
  }

  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    await this.#try(() => this.#set(key, value, ttlMs), undefined);
  }

  delete(key: string): Promise<boolean> {
    return this.#try(async () => (await this.#redis.del(this.#prefix + key)) > 0, false);
  }

  has(key: string): Promise<boolean> {
    return this.#try(async () => (await this.#redis.exists(this.#prefix + key)) > 0, false);
  }

  async clear(prefix = ''): Promise<number> {
    return this.#try(async () => {
      let removed = 0;
      let cursor = '0';
      const pattern = `${this.#prefix}${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
      do {
        const [next, keys] = await this.#redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
        cursor = next;
        if (keys.length > 0) removed += await this.#redis.unlink(...keys);
      } while (cursor !== '0');
      return removed;
    }, 0);
  }

  stats(): StoreStats {
    // entries and bytes live in the Redis server, shared with other coordinators
    return { entries: -1, bytes: -1, evictions: 0, errors: this.#errors };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#handlers.clear();
    this.#redis.disconnect();
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    if (subscriber) await subscriber.then((s) => s.disconnect()).catch(() => {});
  }
}
