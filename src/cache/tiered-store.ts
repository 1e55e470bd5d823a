/**
 * Tiers in front of one another (memory → SQLite or Redis): a read tries each in order and
 * copies a lower tier's hit into the tiers above it; a write goes to every tier.
 *
 * A promoted copy lives as long as the lower tier's entry has left (SQLite and Redis say);
 * from a tier that cannot say, `promoteTtlMs`. The response cache's entries also carry their
 * expiry inside them, so no copy anywhere is ever served past it.
 */

import type { CacheStore, StorePubSub, StoreStats } from './store.ts';

export class TieredStore implements CacheStore {
  readonly name: string;
  readonly tiers: readonly CacheStore[];
  /** Hits per tier, by tier name. */
  readonly hitsByTier: Record<string, number>;
  /** The first tier's that has one (Redis): messages go where the shared state is. */
  readonly pubSub: StorePubSub | undefined;
  /** TTL to give an entry promoted into an upper tier, ms (lower tiers do not tell what is left). */
  readonly #promoteTtlMs: number | undefined;

  constructor(tiers: readonly CacheStore[], promoteTtlMs?: number) {
    if (tiers.length === 0) throw new RangeError('a tiered store needs at least one tier');
    this.tiers = tiers;
    this.name = tiers.map((t) => t.name).join('+');
    this.hitsByTier = Object.fromEntries(tiers.map((t) => [t.name, 0]));
    this.#promoteTtlMs = promoteTtlMs;
    this.pubSub = tiers.find((t) => t.pubSub !== undefined)?.pubSub;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    for (const [i, tier] of this.tiers.entries()) {
      // below the top, ask what the entry has left, so the copy above expires with it
      const entry = i > 0 && tier.getEntry ? await tier.getEntry(key) : undefined;
      const value = entry ? entry.value : i > 0 && tier.getEntry ? undefined : await tier.get(key);
      if (value === undefined) continue;
      this.hitsByTier[tier.name]!++;
      const ttlMs = entry ? (entry.ttlMs ?? this.#promoteTtlMs) : this.#promoteTtlMs;
      for (const upper of this.tiers.slice(0, i)) await upper.set(key, value, ttlMs);
      return value;
    }
    return undefined;
  }

  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    await Promise.all(this.tiers.map((t) => t.set(key, value, ttlMs)));
  }

  async delete(key: string): Promise<boolean> {
    const results = await Promise.all(this.tiers.map((t) => t.delete(key)));
    return results.some(Boolean);
  }

  async has(key: string): Promise<boolean> {
    for (const tier of this.tiers) if (await tier.has(key)) return true;
    return false;
  }

  async clear(prefix?: string): Promise<number> {
    const counts = await Promise.all(this.tiers.map((t) => t.clear(prefix)));
    return Math.max(0, ...counts);
  }

  stats(): StoreStats {
    const all = this.tiers.map((t) => t.stats());
    return {
      entries: all[0]!.entries,
      bytes: all[0]!.bytes,
      evictions: all.reduce((n, s) => n + s.evictions, 0),
      errors: all.reduce((n, s) => n + s.errors, 0),
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.tiers.map((t) => t.close()));
  }
}
