/**
 * Per-model statistics on a worker, in the shape of Triton's statistics extension where it
 * fits: inference count (requests' rows) vs execution count (batches) — their ratio is the
 * mean batch size — queue time and compute time kept apart, a histogram of executed batch
 * sizes, the queue's depth, and rejections by reason.
 */

import type { CountNs, ModelStatsSnapshot } from '../protocol/index.ts';

// the snapshot is what a worker sends in STATS_RESPONSE, so its shape is defined with the messages
export type { CountNs, ModelStatsSnapshot };

const cn = (): CountNs => ({ count: 0, ns: 0 });

/**
 * Receives each duration as it happens (for histograms, e.g. Prometheus). Called on the hot
 * path: implementations must not allocate (bind label values once, beforehand).
 */
export interface StatsObserver {
  /** One request's time in the queue, seconds. */
  queued(seconds: number): void;
  /** One model execution's compute time, seconds. */
  executed(seconds: number): void;
}

export class ModelStats {
  readonly name: string;
  readonly version: string;
  lastInferenceMs = 0;
  inferenceCount = 0;
  executionCount = 0;
  readonly success = cn();
  readonly fail = cn();
  readonly queue = cn();
  queueMaxNs = 0;
  readonly computeInfer = cn();
  readonly #batches = new Map<number, CountNs>();
  queueDepth = 0;
  maxQueueDepth = 0;
  readonly rejected = { overloaded: 0, deadline: 0, cancelled: 0 };

  readonly #observer: StatsObserver | undefined;

  constructor(name: string, version: string, observer?: StatsObserver) {
    this.name = name;
    this.version = version;
    this.#observer = observer;
  }

  onQueueDepth(depth: number): void {
    this.queueDepth = depth;
    if (depth > this.maxQueueDepth) this.maxQueueDepth = depth;
  }

  /** A batch of `rows` rows for `requests` requests ran for `computeMs`. */
  onBatch(batchSize: number, requests: number, computeMs: number, nowMs: number): void {
    const ns = Math.round(computeMs * 1e6);
    this.executionCount++;
    this.inferenceCount += batchSize;
    this.lastInferenceMs = nowMs;
    this.computeInfer.count += requests;
    this.computeInfer.ns += ns * requests;
    let entry = this.#batches.get(batchSize);
    if (!entry) {
      entry = cn();
      this.#batches.set(batchSize, entry);
    }
    entry.count++;
    entry.ns += ns;
    this.#observer?.executed(computeMs / 1000);
  }

  onQueued(waitMs: number): void {
    const ns = Math.round(waitMs * 1e6);
    this.queue.count++;
    this.queue.ns += ns;
    if (ns > this.queueMaxNs) this.queueMaxNs = ns;
    this.#observer?.queued(waitMs / 1000);
  }

  onDone(ok: boolean, totalMs: number): void {
    const bucket = ok ? this.success : this.fail;
    bucket.count++;
    bucket.ns += Math.round(totalMs * 1e6);
  }

  onRejected(reason: keyof ModelStats['rejected']): void {
    this.rejected[reason]++;
  }

  snapshot(): ModelStatsSnapshot {
    return {
      name: this.name,
      version: this.version,
      lastInferenceMs: this.lastInferenceMs,
      inferenceCount: this.inferenceCount,
      executionCount: this.executionCount,
      success: { ...this.success },
      fail: { ...this.fail },
      queue: { ...this.queue },
      queueMaxNs: this.queueMaxNs,
      computeInfer: { ...this.computeInfer },
      batchStats: [...this.#batches]
        .sort((a, b) => a[0] - b[0])
        .map(([batchSize, c]) => ({ batchSize, computeInfer: { ...c } })),
      queueDepth: this.queueDepth,
      maxQueueDepth: this.maxQueueDepth,
      rejected: { ...this.rejected },
    };
  }
}

/** Sums snapshots of one model from several workers. */
export function mergeStats(snapshots: readonly ModelStatsSnapshot[]): ModelStatsSnapshot | undefined {
  const first = snapshots[0];
  if (!first) return undefined;
  const add = (a: CountNs, b: CountNs): CountNs => ({ count: a.count + b.count, ns: a.ns + b.ns });
  const merged: ModelStatsSnapshot = { ...first, batchStats: [] };
  const batches = new Map<number, CountNs>();
  for (const b of first.batchStats) batches.set(b.batchSize, { ...b.computeInfer });
  for (const s of snapshots.slice(1)) {
    merged.lastInferenceMs = Math.max(merged.lastInferenceMs, s.lastInferenceMs);
    merged.inferenceCount += s.inferenceCount;
    merged.executionCount += s.executionCount;
    merged.success = add(merged.success, s.success);
    merged.fail = add(merged.fail, s.fail);
    merged.queue = add(merged.queue, s.queue);
    merged.queueMaxNs = Math.max(merged.queueMaxNs, s.queueMaxNs);
    merged.computeInfer = add(merged.computeInfer, s.computeInfer);
    merged.queueDepth += s.queueDepth;
    merged.maxQueueDepth += s.maxQueueDepth;
    merged.rejected = {
      overloaded: merged.rejected.overloaded + s.rejected.overloaded,
      deadline: merged.rejected.deadline + s.rejected.deadline,
      cancelled: merged.rejected.cancelled + s.rejected.cancelled,
    };
    for (const b of s.batchStats)
      batches.set(b.batchSize, add(batches.get(b.batchSize) ?? cn(), b.computeInfer));
  }
  merged.batchStats = [...batches]
    .sort((a, b) => a[0] - b[0])
    .map(([batchSize, c]) => ({ batchSize, computeInfer: c }));
  return merged;
}
