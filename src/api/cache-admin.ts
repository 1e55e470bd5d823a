/**
 * Cache operations:
 *   GET    /admin/cache            the store's tiers and figures, and per model hits, misses,
 *                                  single-flight joins, bypasses, refreshes, stores, errors
 *   DELETE /admin/cache[?model=m]  drops every cached response, or one model's
 */

import type { FastifyInstance } from 'fastify';
import { TieredStore } from '../cache/index.ts';
import type { Coordinator } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';

export function registerCacheAdminRoutes(app: FastifyInstance, coordinator: Coordinator): void {
  const cacheOf = () => {
    const cache = coordinator.cache;
    if (!cache) throw new InfergridError('UNAVAILABLE', 'the cache is not started yet');
    return cache;
  };

  app.get('/admin/cache', async () => {
    const cache = cacheOf();
    const { store } = cache;
    const tiers = store instanceof TieredStore ? store.tiers : [store];
    return {
      store: store.name,
      tiers: tiers.map((t) => ({
        name: t.name,
        ...t.stats(),
        ...(store instanceof TieredStore ? { hits: store.hitsByTier[t.name] ?? 0 } : {}),
      })),
      inFlight: cache.inFlight,
      models: cache.stats(),
      cachedModels: [...coordinator.registry.entries()]
        .filter((e) => e.config?.cache.enabled)
        .map((e) => e.name),
    };
  });

  app.delete<{ Querystring: { model?: string } }>('/admin/cache', async (req) => {
    const model = req.query.model;
    if (model !== undefined) coordinator.registry.resolve(model); // 404 for a model nobody knows
    const removed = await cacheOf().clear(model);
    return { cleared: model ?? 'all', removed };
  });
}
