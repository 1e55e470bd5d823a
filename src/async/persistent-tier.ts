import { type CacheStore, RedisStore, TieredStore } from '../cache/index.ts';
import type { ClusterConfig } from '../config/index.ts';

/**
 * The part of a coordinator's cache store that outlives the process or is shared (SQLite,
 * Redis), for asynchronous results: its memory tier is left out, since results are kept in
 * memory by AsyncRequests itself and would only crowd cached responses out of it. Undefined
 * when the store is memory only. The tiers returned are the cache's own: their owner closes them.
 */
export function persistentTier(store: CacheStore | undefined): CacheStore | undefined {
  if (store === undefined) return undefined;
  if (store instanceof TieredStore) {
    const lower = store.tiers.filter((t) => t.name !== 'memory');
    if (lower.length <= 1) return lower[0];
    return new TieredStore(lower);
  }
  return store.name === 'memory' ? undefined : store;
}

/**
 * The store asynchronous requests keep their records in: with a Redis tier (the cache's, or
 * in a cluster whose cache has none, the cluster's Redis) that tier alone, since records and
 * cancel markers must be read where every coordinator writes them (a local SQLite tier above it
 * would keep a stale copy, such as "pending" after the result was written); otherwise the
 * cache's persistent tiers (SQLite: results outlive a restart). `owned` is the store opened
 * here, which the caller closes; it connects in the background, so a Redis that is down at
 * start-up fails nothing.
 */
export function asyncStore(
  cacheStore: CacheStore | undefined,
  cluster: ClusterConfig | undefined,
): { store: CacheStore | undefined; owned: CacheStore | undefined } {
  const lower = persistentTier(cacheStore);
  const tiers = lower instanceof TieredStore ? lower.tiers : lower ? [lower] : [];
  const redis = tiers.find((t) => t.name === 'redis');
  if (redis) return { store: redis, owned: undefined };
  if (!cluster) return { store: lower, owned: undefined };
  const owned = RedisStore.open({ ...cluster.redis, namespace: cluster.redis.namespace });
  return { store: owned, owned };
}
