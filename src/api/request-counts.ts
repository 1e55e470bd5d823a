/**
 * How many inference requests the coordinator answered, per model name and in total, with
 * errors by code and a requests-per-second rate over the last few whole seconds.
 *
 * Trade-off: counting is on the hot path, so it allocates nothing per request: the per-model
 * records and their one-second rings are made once per model, and a model name nobody serves
 * (a 404) is counted in the totals only, so a client cannot grow the map with made-up names.
 * Requests are keyed by the model /metrics counts them under (the coordinator's one rule,
 * `RequestEndEvent.countedModel`: "" for none), not by version: a traffic split's versions share
 * one record (as the cache's figures do).
 */

/** The rate is averaged over this many whole seconds and the current partial one. */
export const RATE_WINDOW_S = 5;
/** One-second buckets kept; more than the window so a late reader still finds whole seconds. */
const RING_SLOTS = 16;

/** Requests per second over recent whole seconds, without per-request allocation. */
class SecondRing {
  readonly #seconds = new Float64Array(RING_SLOTS).fill(-1);
  readonly #counts = new Float64Array(RING_SLOTS);

  add(nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    const slot = second % RING_SLOTS;
    if (this.#seconds[slot] !== second) {
      this.#seconds[slot] = second;
      this.#counts[slot] = 0;
    }
    this.#counts[slot]!++;
  }

  /**
   * Mean per second from the start of the `RATE_WINDOW_S`-th whole second back (or `sinceMs`,
   * when later) to `nowMs`, the current partial second included so a change shows at once.
   */
  rate(nowMs: number, sinceMs: number): number {
    const current = Math.floor(nowMs / 1000);
    const fromMs = Math.max(sinceMs, (current - RATE_WINDOW_S) * 1000);
    let sum = 0;
    for (let s = Math.floor(fromMs / 1000); s <= current; s++) {
      const slot = s % RING_SLOTS;
      if (this.#seconds[slot] === s) sum += this.#counts[slot]!;
    }
    // at least a second: the first requests after a start are not a spike
    return sum / Math.max(1, (nowMs - fromMs) / 1000);
  }
}

export interface RequestTotals {
  requests: number;
  errors: number;
  /** Failed requests by error code. */
  errorsByCode: Record<string, number>;
  /** Requests per second over the last `RATE_WINDOW_S` whole seconds and the current partial one. */
  requestsPerSecond: number;
}

class Counts {
  requests = 0;
  errors = 0;
  readonly byCode = new Map<string, number>();
  readonly ring = new SecondRing();

  add(code: string | undefined, nowMs: number): void {
    this.requests++;
    this.ring.add(nowMs);
    if (code === undefined) return;
    this.errors++;
    this.byCode.set(code, (this.byCode.get(code) ?? 0) + 1);
  }

  totals(nowMs: number, sinceMs: number): RequestTotals {
    return {
      requests: this.requests,
      errors: this.errors,
      errorsByCode: Object.fromEntries(this.byCode),
      requestsPerSecond: Math.round(this.ring.rate(nowMs, sinceMs) * 100) / 100,
    };
  }
}

export interface RequestCountsOptions {
  /** Versions served under a name; empty for a name nobody serves (then counted in totals only). */
  versions: (name: string) => readonly string[];
  now?: () => number;
}

export class RequestCounts {
  readonly #options: RequestCountsOptions;
  readonly #now: () => number;
  readonly #all = new Counts();
  readonly #byModel = new Map<string, Counts>();
  readonly startedAtMs: number;

  constructor(options: RequestCountsOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.startedAtMs = this.#now();
  }

  /** One inference request ended: `code` undefined when it succeeded (or was accepted, for async). */
  onEnd(model: string, code: string | undefined): void {
    const nowMs = this.#now();
    this.#all.add(code, nowMs);
    let counts = this.#byModel.get(model);
    if (!counts) {
      if (this.#options.versions(model).length === 0) return;
      counts = new Counts();
      this.#byModel.set(model, counts);
    }
    counts.add(code, nowMs);
  }

  /** All requests, including those for names nobody serves. */
  total(): RequestTotals {
    return this.#all.totals(this.#now(), this.startedAtMs);
  }

  /** One model name's figures; zeros when it has had no requests. */
  model(name: string): RequestTotals {
    const counts = this.#byModel.get(name);
    if (!counts) return { requests: 0, errors: 0, errorsByCode: {}, requestsPerSecond: 0 };
    return counts.totals(this.#now(), this.startedAtMs);
  }
}
