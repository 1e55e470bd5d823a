export { type CachedResponse, DECODED_MEMO_BYTES, EntryCodec } from './entry.ts';
export { createCacheStore } from './factory.ts';
export { type CacheKey, cacheKey, modelPrefix } from './key.ts';
export { MemoryStore, type MemoryStoreOptions } from './memory-store.ts';
export { REDIS_PREFIX, RedisStore, type RedisStoreOptions } from './redis-store.ts';
export {
  type CacheMode,
  type CacheOutcome,
  type CacheRequest,
  type ModelCacheStats,
  ResponseCache,
} from './response-cache.ts';
export { SQLITE_TABLE, SqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';
export { type CacheStore, type KvApi, type StorePubSub, type StoreStats, kvApi } from './store.ts';
export { TieredStore } from './tiered-store.ts';
