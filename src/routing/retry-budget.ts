/**
 * A retry budget (as Finagle's and Envoy's): retries may add at most `ratio` of the request
 * rate, plus a small floor of `minPerSecond` so a quiet service can still retry. During an
 * outage every request fails at once; without a budget each would be retried N times and
 * the surviving workers would see N× the load just when they can least take it.
 */

export interface RetryBudgetOptions {
  /** Retries allowed per request, on average (0.2 = 20% extra load at most). */
  ratio: number;
  /** Retries allowed per second regardless of traffic. */
  minPerSecond: number;
  now?: () => number;
}

/** Tokens are counted in thousandths of a retry, as integers, so ratios add up exactly. */
const UNITS_PER_RETRY = 1000;

export class RetryBudget {
  readonly #options: Required<RetryBudgetOptions>;
  readonly #perRequest: number;
  readonly #capacity: number;
  #units: number;
  #refilledAt: number;
  /** Retries refused for want of budget. */
  exhausted = 0;

  constructor(options: RetryBudgetOptions) {
    if (!(options.ratio >= 0)) throw new RangeError('ratio must be >= 0');
    if (!(options.minPerSecond >= 0)) throw new RangeError('minPerSecond must be >= 0');
    this.#options = { now: Date.now, ...options };
    this.#perRequest = Math.round(options.ratio * UNITS_PER_RETRY);
    // enough to absorb a burst: ten seconds of the floor, or 100 retries' worth of requests
    this.#capacity = Math.round(
      Math.max(1, options.minPerSecond * 10, options.ratio * 100) * UNITS_PER_RETRY,
    );
    this.#units = this.#capacity;
    this.#refilledAt = this.#options.now();
  }

  /** Every request (not retry) earns `ratio` of a retry. */
  onRequest(): void {
    this.#units = Math.min(this.#capacity, this.#units + this.#perRequest);
  }

  /** Adds the floor's refill for the time since the last one. */
  #refill(): void {
    const now = this.#options.now();
    const { minPerSecond } = this.#options;
    // minPerSecond retries a second is minPerSecond units a millisecond; the clock moves on only
    // by the time turned into whole units, so a fractional rate still adds up
    const units = Math.floor((now - this.#refilledAt) * minPerSecond);
    if (units > 0) {
      this.#units = Math.min(this.#capacity, this.#units + units);
      this.#refilledAt += units / minPerSecond;
    }
    // a full bucket or no floor at all: nothing to carry over
    if (this.#units >= this.#capacity || minPerSecond === 0) this.#refilledAt = now;
  }

  /** Whether a retry would be allowed now (takes nothing; a no is counted in `exhausted`). */
  canRetry(): boolean {
    this.#refill();
    if (this.#units >= UNITS_PER_RETRY) return true;
    this.exhausted++;
    return false;
  }

  /** Takes one retry from the budget if there is one. */
  tryRetry(): boolean {
    if (!this.canRetry()) return false;
    this.#units -= UNITS_PER_RETRY;
    return true;
  }

  /** Whole retries available now. */
  get available(): number {
    this.#refill();
    return Math.floor(this.#units / UNITS_PER_RETRY);
  }
}
