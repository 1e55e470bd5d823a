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

export class RetryBudget {
  readonly #options: Required<RetryBudgetOptions>;
  readonly #capacity: number;
  #tokens: number;
  #refilledAt: number;
  /** Retries refused for want of budget. */
  exhausted = 0;

  constructor(options: RetryBudgetOptions) {
    if (!(options.ratio >= 0)) throw new RangeError('ratio must be >= 0');
    if (!(options.minPerSecond >= 0)) throw new RangeError('minPerSecond must be >= 0');
    this.#options = { now: Date.now, ...options };
    // enough to absorb a burst: ten seconds of the floor, or 100 retries' worth of requests
    this.#capacity = Math.max(1, options.minPerSecond * 10, options.ratio * 100);
    this.#tokens = this.#capacity;
    this.#refilledAt = this.#options.now();
  }

  /** Every request (not retry) earns `ratio` of a retry. */
  onRequest(): void {
    this.#tokens = Math.min(this.#capacity, this.#tokens + this.#options.ratio);
  }

  /** Takes one retry from the budget if there is one. */
  tryRetry(): boolean {
    const now = this.#options.now();
    this.#tokens = Math.min(
      this.#capacity,
      this.#tokens + ((now - this.#refilledAt) / 1000) * this.#options.minPerSecond,
    );
    this.#refilledAt = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    this.exhausted++;
    return false;
  }

  get available(): number {
    return Math.floor(this.#tokens);
  }
}
