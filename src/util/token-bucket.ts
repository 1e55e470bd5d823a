/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. `take` spends one
 * token and answers 0, or spends nothing and answers how long until one is there, ms.
 */
export class TokenBucket {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #lastMs: number;

  constructor(ratePerSecond: number, burst: number, now: () => number = () => performance.now()) {
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#lastMs = now();
  }

  take(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#lastMs) * this.#ratePerMs);
    this.#lastMs = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return (1 - this.#tokens) / this.#ratePerMs;
  }
}
