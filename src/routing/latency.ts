/**
 * Latency as the router sees it. `LatencyEwma`: an exponentially weighted moving average of
 * observed latency that decays toward 0 (half-life `halfLifeMs`) while the worker gets no
 * traffic, so one slow answer does not shun a worker forever. `LatencyWindow`: recent
 * latencies of a model, for the hedging delay (a percentile).
 */

export class LatencyEwma {
  readonly #alpha: number;
  readonly #halfLifeMs: number;
  #value: number | undefined;
  #at = 0;

  constructor(options: { alpha?: number; halfLifeMs: number }) {
    this.#alpha = options.alpha ?? 0.3;
    this.#halfLifeMs = options.halfLifeMs;
  }

  observe(latencyMs: number, now: number): void {
    const previous = this.valueAt(now);
    this.#value = previous === undefined ? latencyMs : previous + this.#alpha * (latencyMs - previous);
    this.#at = now;
  }

  /** The average as of `now`: decayed by the time since the last observation. */
  valueAt(now: number): number | undefined {
    if (this.#value === undefined) return undefined;
    const idle = Math.max(0, now - this.#at);
    return this.#value * 0.5 ** (idle / this.#halfLifeMs);
  }
}

/** A ring of the last `size` latencies with a cached percentile. */
export class LatencyWindow {
  readonly #samples: Float64Array;
  #count = 0;
  #next = 0;
  #cached: { p: number; value: number; atCount: number } | undefined;

  constructor(size = 512) {
    this.#samples = new Float64Array(size);
  }

  observe(latencyMs: number): void {
    this.#samples[this.#next] = latencyMs;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#count++;
  }

  get count(): number {
    return this.#count;
  }

  /**
   * The p-th percentile (0..100, nearest rank) of the window; recomputed after 32 more
   * observations, or sooner while the window is young (once the count has doubled), so a value
   * computed from the first few samples is not served for the next 31.
   */
  percentile(p: number): number | undefined {
    const n = Math.min(this.#count, this.#samples.length);
    if (n === 0) return undefined;
    const cached = this.#cached;
    if (cached && cached.p === p && this.#count - cached.atCount < Math.min(32, cached.atCount))
      return cached.value;
    const sorted = this.#samples.slice(0, n).sort();
    const value = sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!;
    this.#cached = { p, value, atCount: this.#count };
    return value;
  }
}
