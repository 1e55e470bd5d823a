/**
 * The response cache in front of the workers, with single-flight: identical requests that
 * arrive while the first is being computed wait for that one result instead of each going to
 * a worker. The shared computation belongs to nobody in particular: it is cancelled only when
 * every request waiting on it has gone (client disconnects), and each waiter keeps its own
 * deadline. Only successful responses are stored. A store that fails (Redis gone) is a miss,
 * never a failed request.
 */

import { InfergridError, toInfergridError } from '../errors.ts';
import type { Logger } from '../telemetry/index.ts';
import { type CachedResponse, EntryCodec } from './entry.ts';
import type { CacheKey } from './key.ts';
import type { CacheStore } from './store.ts';

/** How a request met the cache: answered from it, computed (and stored), joined another's computation, or skipped it. */
export type CacheOutcome = 'hit' | 'miss' | 'joined' | 'bypass' | 'refresh';
export type CacheMode = 'normal' | 'bypass' | 'refresh';

export interface ModelCacheStats {
  hits: number;
  misses: number;
  joins: number;
  bypasses: number;
  refreshes: number;
  stores: number;
  /** Entries found whose digest did not match (a hash collision or damage): treated as misses. */
  rejectedEntries: number;
  /** Store operations that failed and were treated as misses. */
  storeErrors: number;
}

interface Flight {
  readonly promise: Promise<CachedResponse>;
  readonly controller: AbortController;
  waiters: number;
}

export interface CacheRequest {
  model: string;
  key: CacheKey;
  /** Lifetime of a stored entry, ms; undefined: the store's default (none). */
  ttlMs: number | undefined;
  mode: CacheMode;
  /** This request's own cancellation (its client going away). */
  signal?: AbortSignal | undefined;
  /** This request's own time budget, ms. */
  timeoutMs: number;
  /**
   * Told, when this request computed the answer, how long storing it took once it is stored
   * (ms, encoding and the store's write): the statistics' cache_miss time. Not called when the
   * write fails.
   */
  onStored?: ((ms: number) => void) | undefined;
}

const blank = (): ModelCacheStats => ({
  hits: 0,
  misses: 0,
  joins: 0,
  bypasses: 0,
  refreshes: 0,
  stores: 0,
  rejectedEntries: 0,
  storeErrors: 0,
});

export class ResponseCache {
  readonly store: CacheStore;
  readonly #codec = new EntryCodec();
  readonly #flights = new Map<string, Flight>();
  readonly #stats = new Map<string, ModelCacheStats>();
  readonly #logger: Logger;

  constructor(store: CacheStore, logger: Logger) {
    this.store = store;
    this.#logger = logger;
  }

  #statsOf(model: string): ModelCacheStats {
    let s = this.#stats.get(model);
    if (!s) {
      s = blank();
      this.#stats.set(model, s);
    }
    return s;
  }

  stats(): Record<string, ModelCacheStats> {
    return Object.fromEntries(this.#stats);
  }

  /** Requests being computed right now that others may join. */
  get inFlight(): number {
    return this.#flights.size;
  }

  /**
   * Answers from the cache, or joins an identical request being computed, or computes (with
   * `compute`, given a signal that aborts when nobody waits any more) and stores the result.
   */
  async run(
    request: CacheRequest,
    compute: (signal: AbortSignal) => Promise<CachedResponse>,
  ): Promise<{ response: CachedResponse; outcome: CacheOutcome }> {
    const stats = this.#statsOf(request.model);
    if (request.mode === 'bypass') {
      stats.bypasses++;
      return { response: await compute(request.signal ?? new AbortController().signal), outcome: 'bypass' };
    }
    if (request.mode === 'normal') {
      const cached = await this.#lookup(request, stats);
      if (cached) {
        stats.hits++;
        return { response: cached, outcome: 'hit' };
      }
    }
    const existing = this.#flights.get(request.key.key);
    if (existing && request.mode === 'normal') {
      stats.joins++;
      return { response: await this.#wait(existing, request), outcome: 'joined' };
    }
    if (request.mode === 'refresh') stats.refreshes++;
    else stats.misses++;
    const flight = this.#start(request, compute, stats);
    return {
      response: await this.#wait(flight, request),
      outcome: request.mode === 'refresh' ? 'refresh' : 'miss',
    };
  }

  async #lookup(request: CacheRequest, stats: ModelCacheStats): Promise<CachedResponse | undefined> {
    let bytes: Uint8Array | undefined;
    try {
      bytes = await this.store.get(request.key.key);
    } catch (err) {
      stats.storeErrors++;
      this.#logger.warn(
        { err: (err as Error).message, store: this.store.name },
        'cache read failed; treating as a miss',
      );
      return undefined;
    }
    if (bytes === undefined) return undefined;
    const response = this.#codec.decode(bytes, request.key.digest);
    if (!response) stats.rejectedEntries++;
    return response;
  }

  #start(
    request: CacheRequest,
    compute: (signal: AbortSignal) => Promise<CachedResponse>,
    stats: ModelCacheStats,
  ): Flight {
    const controller = new AbortController();
    // the slot to clear when done; assigned before the computation can finish
    let self: Flight | undefined;
    const release = (): void => {
      if (this.#flights.get(request.key.key) === self) this.#flights.delete(request.key.key);
    };
    const promise = (async () => {
      await undefined; // let the flight be registered before anything can settle it
      let response: CachedResponse;
      try {
        response = await compute(controller.signal);
      } catch (err) {
        release();
        throw err;
      }
      // answer at once; the store write goes on behind (a slow Redis must not delay the answer),
      // and the flight stays joinable until it is done, so nobody recomputes meanwhile
      const storingAt = performance.now();
      const expiresAt = request.ttlMs === undefined ? undefined : Date.now() + request.ttlMs;
      const entry = this.#codec.encode(request.key.digest, response, expiresAt);
      this.store.set(request.key.key, entry, request.ttlMs).then(
        () => {
          stats.stores++;
          release();
          request.onStored?.(performance.now() - storingAt);
        },
        (err: unknown) => {
          stats.storeErrors++;
          release();
          this.#logger.warn(
            { err: (err as Error).message, store: this.store.name },
            'cache write failed; answered without storing',
          );
        },
      );
      return response;
    })();
    // the flight's own rejection is handled by its waiters; never an unhandled rejection
    promise.catch(() => {});
    const flight: Flight = { promise, controller, waiters: 0 };
    self = flight;
    this.#flights.set(request.key.key, flight);
    return flight;
  }

  /** Waits for a flight on behalf of one request, with that request's own cancel and deadline. */
  #wait(flight: Flight, request: CacheRequest): Promise<CachedResponse> {
    flight.waiters++;
    return new Promise<CachedResponse>((resolve, reject) => {
      let done = false;
      const leave = (err?: InfergridError): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        request.signal?.removeEventListener('abort', onAbort);
        flight.waiters--;
        if (err) {
          // the last one out cancels the shared computation, which nobody may join any more
          if (flight.waiters === 0) {
            if (this.#flights.get(request.key.key) === flight) this.#flights.delete(request.key.key);
            flight.controller.abort(err);
          }
          reject(err);
        }
      };
      const onAbort = (): void => leave(toInfergridError(request.signal!.reason, 'CANCELLED'));
      const timer = setTimeout(
        () =>
          leave(
            new InfergridError('DEADLINE_EXCEEDED', `no answer within ${request.timeoutMs} ms`, {
              details: { timeoutMs: request.timeoutMs },
            }),
          ),
        request.timeoutMs,
      );
      if (request.signal?.aborted) {
        onAbort();
        return;
      }
      request.signal?.addEventListener('abort', onAbort, { once: true });
      flight.promise.then(
        (response) => {
          if (done) return;
          leave();
          resolve(response);
        },
        (err: unknown) => {
          if (done) return;
          leave();
          reject(toInfergridError(err));
        },
      );
    });
  }

  /** Drops every entry, or one model's. */
  async clear(model?: string): Promise<number> {
    return this.store.clear(model === undefined ? undefined : `${model}@`);
  }
}
