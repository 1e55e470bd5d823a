import { type CacheStore, TieredStore } from '../cache/index.ts';

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
