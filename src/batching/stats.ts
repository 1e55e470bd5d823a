/**
 * Per-model statistics, in the shape of Triton's statistics extension where it fits: inference
 * count (requests' rows) vs execution count (batches) — their ratio is the mean batch size —
 * queue time and compute time (input preparation, the model run, output extraction) kept
 * apart, a histogram of executed batch sizes, the queue's depth, and rejections by reason.
 * Workers keep one per hosted model version; the coordinator keeps one per version for what
 * only it sees (response cache hits and misses, pipelines run end to end).
 */

import type { BatchStat, ComputeTimings, CountNs, ModelStatsSnapshot } from '../protocol/index.ts';

// the snapshot is what a worker sends in STATS_RESPONSE, so its shape is defined with the messages
export type { BatchStat, ComputeTimings, CountNs, ModelStatsSnapshot };

const cn = (): CountNs => ({ count: 0, ns: 0 });
const add = (a: CountNs, b: CountNs): CountNs => ({ count: a.count + b.count, ns: a.ns + b.ns });
const toNs = (ms: number): number => Math.max(0, Math.round(ms * 1e6));

/** One execution's phases, ms: preparing inputs, the model run, extracting outputs. */
export interface BatchPhasesMs {
  inputMs: number;
  inferMs: number;
  outputMs: number;
}

interface BatchEntry {
  computeInput: CountNs;
  computeInfer: CountNs;
  computeOutput: CountNs;
}

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
  readonly computeInput = cn();
  readonly computeInfer = cn();
  readonly computeOutput = cn();
  readonly cacheHit = cn();
  readonly cacheMiss = cn();
  readonly #batches = new Map<number, BatchEntry>();
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

  /**
   * A batch of `rows` rows for `requests` requests ran: `phases` its time preparing inputs, in
   * the model and extracting outputs. Each request of the batch is counted in each phase with
   * the batch's time (Triton's inference_stats); the batch size's entry counts the execution.
   */
  onBatch(batchSize: number, requests: number, phases: BatchPhasesMs, nowMs: number): void {
    const inputNs = toNs(phases.inputMs);
    const inferNs = toNs(phases.inferMs);
    const outputNs = toNs(phases.outputMs);
    this.executionCount++;
    this.inferenceCount += batchSize;
    this.lastInferenceMs = nowMs;
    this.computeInput.count += requests;
    this.computeInput.ns += inputNs * requests;
    this.computeInfer.count += requests;
    this.computeInfer.ns += inferNs * requests;
    this.computeOutput.count += requests;
    this.computeOutput.ns += outputNs * requests;
    let entry = this.#batches.get(batchSize);
    if (!entry) {
      entry = { computeInput: cn(), computeInfer: cn(), computeOutput: cn() };
      this.#batches.set(batchSize, entry);
    }
    entry.computeInput.count++;
    entry.computeInput.ns += inputNs;
    entry.computeInfer.count++;
    entry.computeInfer.ns += inferNs;
    entry.computeOutput.count++;
    entry.computeOutput.ns += outputNs;
    // the whole execution, as the histogram always measured it (its phases are in the statistics)
    this.#observer?.executed((phases.inputMs + phases.inferMs + phases.outputMs) / 1000);
  }

  /**
   * A request answered from the response cache after `ms` (the lookup and decoding the entry).
   * As in Triton it counts in success and queue (it waited in no queue: 0 ns) and cache_hit,
   * not in inference or execution counts, nor in compute.
   */
  onCacheHit(ms: number, nowMs: number): void {
    const ns = toNs(ms);
    this.cacheHit.count++;
    this.cacheHit.ns += ns;
    this.success.count++;
    this.success.ns += ns;
    this.queue.count++;
    this.lastInferenceMs = nowMs;
  }

  /** A lookup that found nothing took `ms`; the answer was computed (and counted) elsewhere. */
  onCacheMiss(ms: number): void {
    this.cacheMiss.count++;
    this.cacheMiss.ns += toNs(ms);
  }

  /** The computed answer of a miss was stored in `ms`: added to cache_miss's time. */
  onCacheInsert(ms: number): void {
    this.cacheMiss.ns += toNs(ms);
  }

  /**
   * A pipeline request answered (or failed) after `totalMs`, end to end; on success `timings`
   * are its steps' summed, counted as one execution of `rows` rows (Triton's ensembles).
   */
  onPipeline(
    ok: boolean,
    totalMs: number,
    rows: number,
    timings: ComputeTimings | undefined,
    nowMs: number,
  ): void {
    this.onDone(ok, totalMs);
    if (!ok || !timings) return;
    this.queue.count++;
    this.queue.ns += timings.queueNs;
    if (timings.queueNs > this.queueMaxNs) this.queueMaxNs = timings.queueNs;
    this.onBatch(
      rows,
      1,
      {
        inputMs: timings.computeInputNs / 1e6,
        inferMs: timings.computeInferNs / 1e6,
        outputMs: timings.computeOutputNs / 1e6,
      },
      nowMs,
    );
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
      computeInput: { ...this.computeInput },
      computeInfer: { ...this.computeInfer },
      computeOutput: { ...this.computeOutput },
      cacheHit: { ...this.cacheHit },
      cacheMiss: { ...this.cacheMiss },
      batchStats: [...this.#batches]
        .sort((a, b) => a[0] - b[0])
        .map(([batchSize, e]) => ({
          batchSize,
          computeInput: { ...e.computeInput },
          computeInfer: { ...e.computeInfer },
          computeOutput: { ...e.computeOutput },
        })),
      queueDepth: this.queueDepth,
      maxQueueDepth: this.maxQueueDepth,
      rejected: { ...this.rejected },
    };
  }
}

/** Sums snapshots of one model from several workers (and the coordinator's own record). */
export function mergeStats(snapshots: readonly ModelStatsSnapshot[]): ModelStatsSnapshot | undefined {
  const first = snapshots[0];
  if (!first) return undefined;
  const merged: ModelStatsSnapshot = { ...first, batchStats: [] };
  const batches = new Map<number, BatchStat>();
  const addBatches = (list: readonly BatchStat[]): void => {
    for (const b of list) {
      const e = batches.get(b.batchSize);
      batches.set(
        b.batchSize,
        e
          ? {
              batchSize: b.batchSize,
              computeInput: add(e.computeInput, b.computeInput),
              computeInfer: add(e.computeInfer, b.computeInfer),
              computeOutput: add(e.computeOutput, b.computeOutput),
            }
          : { ...b },
      );
    }
  };
  addBatches(first.batchStats);
  for (const s of snapshots.slice(1)) {
    merged.lastInferenceMs = Math.max(merged.lastInferenceMs, s.lastInferenceMs);
    merged.inferenceCount += s.inferenceCount;
    merged.executionCount += s.executionCount;
    merged.success = add(merged.success, s.success);
    merged.fail = add(merged.fail, s.fail);
    merged.queue = add(merged.queue, s.queue);
    merged.queueMaxNs = Math.max(merged.queueMaxNs, s.queueMaxNs);
    merged.computeInput = add(merged.computeInput, s.computeInput);
    merged.computeInfer = add(merged.computeInfer, s.computeInfer);
    merged.computeOutput = add(merged.computeOutput, s.computeOutput);
    merged.cacheHit = add(merged.cacheHit, s.cacheHit);
    merged.cacheMiss = add(merged.cacheMiss, s.cacheMiss);
    merged.queueDepth += s.queueDepth;
    merged.maxQueueDepth += s.maxQueueDepth;
    merged.rejected = {
      overloaded: merged.rejected.overloaded + s.rejected.overloaded,
      deadline: merged.rejected.deadline + s.rejected.deadline,
      cancelled: merged.rejected.cancelled + s.rejected.cancelled,
    };
    addBatches(s.batchStats);
  }
  merged.batchStats = [...batches.values()].sort((a, b) => a.batchSize - b.batchSize);
  return merged;
}
