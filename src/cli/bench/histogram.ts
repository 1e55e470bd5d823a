/**
 * Latencies in an HDR histogram (node:perf_hooks createHistogram) instead of a sorted array of
 * every sample: memory stays fixed however long the run, and recording is O(1). The trade-off is
 * precision: values are kept in whole nanoseconds to 3 significant digits, so a percentile is
 * within 0.1% of the true sample (never outside the exact min and max). Count, mean, min and
 * max are kept apart from the histogram, exactly.
 *
 * This is the one percentile computation of infergrid's benchmarks: `infergrid bench` and every
 * scenario in bench/ summarise through it.
 */

import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

/** The largest value kept apart: one hour, ns; longer ones are recorded as this. */
const MAX_NS = 3_600_000_000_000;

export interface LatencySummary {
  count: number;
  meanMs: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

export class LatencyHistogram {
  readonly #histogram: RecordableHistogram = createHistogram({ lowest: 1, highest: MAX_NS, figures: 3 });
  #count = 0;
  #sumMs = 0;
  #minMs = Number.POSITIVE_INFINITY;
  #maxMs = 0;

  get count(): number {
    return this.#count;
  }

  record(ms: number): void {
    this.#histogram.record(Math.min(MAX_NS, Math.max(1, Math.round(ms * 1e6))));
    this.#count++;
    this.#sumMs += ms;
    if (ms < this.#minMs) this.#minMs = ms;
    if (ms > this.#maxMs) this.#maxMs = ms;
  }

  /** Adds everything `other` recorded: several runs summarised as one. */
  add(other: LatencyHistogram): void {
    this.#histogram.add(other.#histogram);
    this.#count += other.#count;
    this.#sumMs += other.#sumMs;
    this.#minMs = Math.min(this.#minMs, other.#minMs);
    this.#maxMs = Math.max(this.#maxMs, other.#maxMs);
  }

  /** The `q` quantile (0 < q <= 1), ms; 0 when nothing was recorded. */
  quantileMs(q: number): number {
    if (this.#count === 0) return 0;
    // HDR answers the top of the value's bucket: never report beyond the exact min or max
    return Math.min(this.#maxMs, Math.max(this.#minMs, this.#histogram.percentile(q * 100) / 1e6));
  }

  summary(): LatencySummary {
    const round = (ms: number): number => Math.round(ms * 1000) / 1000;
    if (this.#count === 0) return { count: 0, meanMs: 0, minMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 };
    return {
      count: this.#count,
      meanMs: round(this.#sumMs / this.#count),
      minMs: round(this.#minMs),
      p50Ms: round(this.quantileMs(0.5)),
      p90Ms: round(this.quantileMs(0.9)),
      p99Ms: round(this.quantileMs(0.99)),
      maxMs: round(this.#maxMs),
    };
  }
}
