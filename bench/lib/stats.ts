/** A model's statistics as a running coordinator reports them, and what its workers did between two reads. */

export interface CountNs {
  count: number;
  ns: number;
}

/** The part of Triton's statistics (GET /v2/models/{m}/stats) benchmarks read. */
export interface ModelStats {
  inference_count: number;
  execution_count: number;
  inference_stats: { fail: CountNs; queue: CountNs; compute_infer: CountNs };
  infergrid: { workers: { id: string; inference_count: number }[] };
}

/**
 * A model's statistics summed over its workers, from a running coordinator; a scenario that reads
 * more of them than ModelStats names gives its own type.
 */
export async function modelStats<T = ModelStats>(url: string, model: string): Promise<T> {
  const res = await fetch(`${url}/v2/models/${model}/stats`);
  if (!res.ok) throw new Error(`stats of ${model}: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { model_stats: T[] }).model_stats[0]!;
}

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** What a model's workers did between two statistics snapshots: batches, their mean size, queue and run time. */
export function workerDelta(before: ModelStats, after: ModelStats) {
  const inferences = after.inference_count - before.inference_count;
  const executions = after.execution_count - before.execution_count;
  const perRequestMs = (b: CountNs, a: CountNs): number =>
    a.count === b.count ? 0 : roundTo((a.ns - b.ns) / (a.count - b.count) / 1e6, 3);
  return {
    inferences,
    executions,
    meanBatchSize: executions === 0 ? 0 : roundTo(inferences / executions, 2),
    failed: after.inference_stats.fail.count - before.inference_stats.fail.count,
    /** Per request: time queued on the worker, and the run time of its batch. */
    queueMsMean: perRequestMs(before.inference_stats.queue, after.inference_stats.queue),
    computeMsMean: perRequestMs(before.inference_stats.compute_infer, after.inference_stats.compute_infer),
    /** Requests each worker answered. */
    byWorker: Object.fromEntries(
      after.infergrid.workers.map((w) => [
        w.id,
        w.inference_count - (before.infergrid.workers.find((x) => x.id === w.id)?.inference_count ?? 0),
      ]),
    ) as Record<string, number>,
  };
}
export type WorkerDelta = ReturnType<typeof workerDelta>;
