/** Exponential backoff with full jitter, for reconnects and restarts. */
export interface BackoffOptions {
  /** First delay, ms. */
  initialDelayMs: number;
  /** Cap on any delay, ms. */
  maxDelayMs: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Source of randomness in [0, 1). Default Math.random. */
  random?: () => number;
}

export class Backoff {
  readonly #options: Required<BackoffOptions>;
  #attempt = 0;

  constructor(options: BackoffOptions) {
    if (!(options.initialDelayMs >= 0)) throw new RangeError('initialDelayMs must be >= 0');
    if (!(options.maxDelayMs >= options.initialDelayMs))
      throw new RangeError('maxDelayMs must be >= initialDelayMs');
    this.#options = { factor: 2, random: Math.random, ...options };
  }

  /** The next delay: between half and all of min(max, initial × factor^attempt). */
  next(): number {
    const { initialDelayMs, maxDelayMs, factor, random } = this.#options;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * factor ** this.#attempt);
    this.#attempt++;
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempts(): number {
    return this.#attempt;
  }
}
