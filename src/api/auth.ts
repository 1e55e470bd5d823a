/**
 * HTTP credentials: API keys sent as `Authorization: Bearer <key>` (as OpenAI clients do),
 * stored as their SHA-256 only, each with scopes and an optional rate limit.
 *
 * Scopes: `infer` (the data plane), `metrics` (read-only operations: /metrics, statistics,
 * GET /admin/*), `admin` (everything: repository load/unload, /admin/* changes, cache clear).
 * `health` (liveness, readiness, server metadata, the dashboard's static files) is granted to
 * every key. With no keys configured the API is open, which `checkExposure` allows only on
 * loopback or when told insecure.
 */

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AnonymousScope, ApiKeyConfig } from '../config/index.ts';
import { ANONYMOUS, type Caller } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';
import { TokenBucket } from '../util/token-bucket.ts';

/** What a route needs: one scope (any of several for statistics). */
export type RouteScope = AnonymousScope;

/** Who made a request, once its credentials are checked. */
export interface Principal {
  /** The key's name; undefined without credentials. */
  readonly name: string | undefined;
  readonly scopes: ReadonlySet<AnonymousScope>;
  /** The identity requests carry into the coordinator (async ownership, logs). */
  readonly caller: Caller;
}

/** A fresh key: `ig_` and 32 random bytes, base64url (256 bits, so one fast hash is enough). */
export function generateApiKey(): string {
  return `ig_${randomBytes(32).toString('base64url')}`;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * The scope a request needs, from its method and path (query excluded). Unknown paths need
 * `infer`, so a caller without credentials learns nothing of which routes exist.
 */
export function scopeOf(method: string, path: string): RouteScope | 'stats' {
  if (path === '/v2' || path.startsWith('/v2/health/')) return 'health';
  if (path === '/' || path === '/dashboard' || path.startsWith('/dashboard/')) return 'health';
  if (path === '/metrics') return 'metrics';
  if (path.startsWith('/v2/repository/')) return 'admin';
  if (path.startsWith('/admin/')) return method === 'GET' || method === 'HEAD' ? 'metrics' : 'admin';
  if (path.startsWith('/v2/models/') && path.endsWith('/stats')) return 'stats';
  if (path === '/v2/models/stats') return 'stats';
  return 'infer';
}

/** Whether `scopes` cover `need`: admin covers all, any key covers health, statistics take infer or metrics. */
export function covers(scopes: ReadonlySet<AnonymousScope>, need: RouteScope | 'stats'): boolean {
  if (scopes.has('admin') || scopes.has(need as AnonymousScope)) return true;
  if (need === 'stats') return scopes.has('infer') || scopes.has('metrics');
  return false;
}

interface Key {
  readonly hash: Buffer;
  readonly principal: Principal;
  readonly bucket: TokenBucket | undefined;
}

export interface AuthDecision {
  principal: Principal;
  /** Set when the request is refused: 401, 403 or 429. */
  error?: InfergridError;
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;
/** Longest Authorization header looked at; a longer one is no key of ours. */
const MAX_AUTHORIZATION_LENGTH = 1024;

export class ApiKeyAuth {
  readonly #keys: Key[];
  readonly #anonymous: Principal;

  constructor(keys: readonly ApiKeyConfig[], anonymous: readonly AnonymousScope[], now?: () => number) {
    this.#keys = keys.map((k) => ({
      hash: Buffer.from(k.sha256, 'hex'),
      principal: {
        name: k.name,
        scopes: new Set<AnonymousScope>(['health', ...k.scopes]),
        caller: Object.freeze({ kind: 'client', id: k.name }),
      },
      bucket: k.rateLimit
        ? new TokenBucket(
            k.rateLimit.requestsPerSecond,
            k.rateLimit.burst ?? Math.max(1, Math.ceil(k.rateLimit.requestsPerSecond)),
            now,
          )
        : undefined,
    }));
    const open = keys.length === 0;
    this.#anonymous = {
      name: undefined,
      scopes: new Set<AnonymousScope>(open ? ['health', 'infer', 'metrics', 'admin'] : anonymous),
      caller: ANONYMOUS,
    };
  }

  /** No keys configured: every request is allowed without credentials. */
  get open(): boolean {
    return this.#keys.length === 0;
  }

  /** Checks a request's Authorization header against the scope its route needs. */
  check(authorization: string | undefined, need: RouteScope | 'stats'): AuthDecision {
    if (authorization === undefined || this.open) {
      const principal = this.#anonymous;
      if (covers(principal.scopes, need)) return { principal };
      return {
        principal,
        error: new InfergridError(
          'UNAUTHENTICATED',
          `this route needs an API key with the "${need === 'stats' ? 'infer' : need}" scope: send Authorization: Bearer <key>`,
        ),
      };
    }
    const key = this.#find(authorization);
    if (!key) {
      return {
        principal: this.#anonymous,
        error: new InfergridError(
          'UNAUTHENTICATED',
          'the API key is not valid: send Authorization: Bearer <key> with a key this server knows',
        ),
      };
    }
    const { principal } = key;
    if (!covers(principal.scopes, need)) {
      return {
        principal,
        error: new InfergridError(
          'PERMISSION_DENIED',
          `API key "${principal.name}" lacks the "${need === 'stats' ? 'infer' : need}" scope this route needs`,
          { details: { key: principal.name, scope: need === 'stats' ? 'infer' : need } },
        ),
      };
    }
    const waitMs = key.bucket?.take() ?? 0;
    if (waitMs > 0) {
      const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
      return {
        principal,
        error: new InfergridError(
          'RATE_LIMITED',
          `API key "${principal.name}" is over its rate limit; retry after ${retryAfterSeconds} s`,
          { details: { key: principal.name, retryAfterSeconds } },
        ),
      };
    }
    return { principal };
  }

  /**
   * The key whose hash matches, comparing against every key in constant time and never
   * stopping early, so the time taken says nothing about which key (or byte) was close.
   */
  #find(authorization: string): Key | undefined {
    if (authorization.length > MAX_AUTHORIZATION_LENGTH) return undefined;
    const m = BEARER.exec(authorization);
    if (!m) return undefined;
    const presented = createHash('sha256').update(m[1]!, 'utf8').digest();
    let found: Key | undefined;
    for (const key of this.#keys) {
      if (timingSafeEqual(key.hash, presented) && found === undefined) found = key;
    }
    return found;
  }
}
