/**
 * Passive outlier detection for one (worker, model): consecutive worker-side failures open
 * the circuit (the worker gets no traffic for that model); after `openMs` it is half-open and
 * lets one real request through as a probe: success closes it, failure opens it again for
 * twice as long (up to `maxOpenMs`). Outcomes that say nothing about the worker (a client's
 * bad input, a cancel) are neutral: they neither count nor reset. While the circuit is open,
 * only the probe's own outcome counts: answers to requests sent before it opened arrive late
 * and say nothing new.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive worker-side failures that open the circuit. */
  failureThreshold: number;
  /** First open period, ms; doubles on each failed probe. */
  openMs: number;
  /** Cap on the open period, ms. */
  maxOpenMs: number;
  now?: () => number;
}

export class CircuitBreaker {
  readonly #options: Required<CircuitBreakerOptions>;
  #failures = 0;
  #opened = false;
  #openUntil = 0;
  #openMs: number;
  #probing = false;
  /** Times the circuit has opened. */
  opens = 0;

  constructor(options: CircuitBreakerOptions) {
    if (!(Number.isInteger(options.failureThreshold) && options.failureThreshold >= 1)) {
      throw new RangeError('failureThreshold must be a positive integer');
    }
    if (!(options.openMs > 0 && options.maxOpenMs >= options.openMs))
      throw new RangeError('need 0 < openMs <= maxOpenMs');
    this.#options = { now: Date.now, ...options };
    this.#openMs = options.openMs;
  }

  get state(): CircuitState {
    if (!this.#opened) return 'closed';
    return this.#options.now() >= this.#openUntil ? 'half-open' : 'open';
  }

  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Whether a request may go through now (closed, or half-open with no probe out yet). */
  get allowsRequest(): boolean {
    const state = this.state;
    return state === 'closed' || (state === 'half-open' && !this.#probing);
  }

  /** Call when a request is sent through. Returns true when it is the half-open probe; pass that to its outcome. */
  onSend(): boolean {
    if (this.state !== 'half-open' || this.#probing) return false;
    this.#probing = true;
    return true;
  }

  onSuccess(probe = false): void {
    if (!this.#opened) {
      this.#failures = 0;
      return;
    }
    if (!probe) return;
    this.#failures = 0;
    this.#opened = false;
    this.#probing = false;
    this.#openMs = this.#options.openMs;
  }

  onFailure(probe = false): void {
    if (this.#opened) {
      if (!probe) return;
      this.#failures++;
      this.#openMs = Math.min(this.#options.maxOpenMs, this.#openMs * 2);
      this.#open();
      return;
    }
    this.#failures++;
    if (this.#failures >= this.#options.failureThreshold) this.#open();
  }

  /** An outcome that says nothing about the worker: a probe that ended so is simply released. */
  onNeutral(probe = false): void {
    if (probe) this.#probing = false;
  }

  #open(): void {
    this.#opened = true;
    this.#probing = false;
    this.#openUntil = this.#options.now() + this.#openMs;
    this.opens++;
  }
}
