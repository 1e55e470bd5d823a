/**
 * Latencies in a log-linear histogram (HDR-style) instead of a sorted array of every sample:
 * memory stays fixed (14 KB) however long the run, and recording is O(1). The trade-off is
 * precision: values are kept in whole microseconds, exact below 128 µs and above that in 64
 * buckets per power of two, so a percentile is within 0.8% of the true sample. Count, mean,
 * min and max are exact.
 */

/** Values below this many µs get a bucket each. */
const LINEAR_US = 128;
/** Buckets per power of two above LINEAR_US: 6 bits of mantissa. */
const SUB_BUCKETS = 64;
/** Powers of two above LINEAR_US up to 2^32 µs (71 minutes), the largest value kept apart. */
const OCTAVES = 25;
const MAX_US = 2 ** 32 - 1;

export interface LatencySummary {
  count: number;
  meanMs: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

function bucketOf(us: number): number {
  if (us < LINEAR_US) return us;
  const shift = 31 - Math.clz32(us) - 6; // us >>> shift lands in [64, 128)
  return LINEAR_US + (shift - 1) * SUB_BUCKETS + ((us >>> shift) - SUB_BUCKETS);
}

/** The middle of a bucket's range of µs values. */
function bucketMiddleUs(index: number): number {
  if (index < LINEAR_US) return index;
  const shift = Math.floor((index - LINEAR_US) / SUB_BUCKETS) + 1;
  const mantissa = ((index - LINEAR_US) % SUB_BUCKETS) + SUB_BUCKETS;
  const low = mantissa * 2 ** shift;
  return low + (2 ** shift - 1) / 2;
}

export class LatencyHistogram {
  readonly #counts = new Float64Array(LINEAR_US + OCTAVES * SUB_BUCKETS);
  #count = 0;
  #sumMs = 0;
  #minMs = Number.POSITIVE_INFINITY;
  #maxMs = 0;

  get count(): number {
    return this.#count;
  }

  record(ms: number): void {
    const us = Math.min(MAX_US, Math.max(0, Math.round(ms * 1000)));
    this.#counts[bucketOf(us)]!++;
    this.#count++;
    this.#sumMs += ms;
    if (ms < this.#minMs) this.#minMs = ms;
    if (ms > this.#maxMs) this.#maxMs = ms;
  }

  /** The nearest-rank `q` quantile (0 < q <= 1), ms; 0 when nothing was recorded. */
  quantileMs(q: number): number {
    if (this.#count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) {
        // a bucket's middle can lie outside what was seen: never report beyond min or max
        return Math.min(this.#maxMs, Math.max(this.#minMs, bucketMiddleUs(i) / 1000));
      }
    }
    return this.#maxMs;
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
