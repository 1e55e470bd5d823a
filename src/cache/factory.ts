import type { CacheConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { Logger } from '../telemetry/index.ts';
import { MemoryStore } from './memory-store.ts';
import { RedisStore } from './redis-store.ts';
import { SqliteStore } from './sqlite-store.ts';
import type { CacheStore } from './store.ts';
import { TieredStore } from './tiered-store.ts';

/**
 * Builds the coordinator's store from config: memory, then SQLite and/or Redis when set. A tier
 * that cannot be opened is a start-up error naming it, unless configured `required: false`,
 * when it is a warning and the tier is left out.
 */
export async function createCacheStore(config: CacheConfig, logger: Logger): Promise<CacheStore> {
  const tiers: CacheStore[] = [new MemoryStore(config.memory)];
  const optional = (err: unknown, required: boolean, what: string): void => {
    if (required) throw err;
    logger.warn({ err: (err as Error).message }, `${what} tier left out (required: false)`);
  };
  if (config.sqlite) {
    try {
      tiers.push(new SqliteStore(config.sqlite));
    } catch (err) {
      optional(err, config.sqlite.required, 'cache: the SQLite');
    }
  }
  if (config.redis) {
    try {
      tiers.push(await RedisStore.connect(config.redis));
    } catch (err) {
      optional(err, config.redis.required, 'cache: the Redis');
    }
  }
  if (tiers.length === 0) throw new InfergridError('INTERNAL', 'no cache tier');
  return tiers.length === 1 ? tiers[0]! : new TieredStore(tiers, config.defaultTtlMs);
}
