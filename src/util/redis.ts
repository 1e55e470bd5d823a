/**
 * The Redis connection every shared-state user opens (the cache's Redis tier, cluster
 * membership, the control plane): commands fail at once while disconnected instead of queueing
 * (a miss, or a retry at the caller's next tick, is better than a wait), each within
 * commandTimeoutMs, and the client keeps reconnecting with backoff capped at 2 s for as long as
 * the process runs. Failures are reported by the commands that fail, not once per reconnect
 * attempt, so the client's own 'error' events are swallowed.
 */

import { Redis, type RedisOptions } from 'ioredis';

export interface RedisEndpoint {
  url: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

/** Reconnect delay after `attempt` failures, ms: doubling from 50, at most 2000. */
export function redisReconnectDelayMs(attempt: number): number {
  return Math.min(2000, 50 * 2 ** Math.min(attempt, 6));
}

export function failFastRedis(endpoint: RedisEndpoint, extra: RedisOptions = {}): Redis {
  const redis = new Redis(endpoint.url, {
    lazyConnect: true,
    connectTimeout: endpoint.connectTimeoutMs,
    commandTimeout: endpoint.commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: redisReconnectDelayMs,
    ...extra,
  });
  redis.on('error', () => {});
  return redis;
}
