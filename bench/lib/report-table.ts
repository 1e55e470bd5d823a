/** Small helpers for the human-readable tables benchmarks print to stderr, and the stats they read. */

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

/** A model's statistics summed over its workers, from a running coordinator. */
export async function modelStats(url: string, model: string): Promise<ModelStats> {
  const res = await fetch(`${url}/v2/models/${model}/stats`);
  if (!res.ok) throw new Error(`stats of ${model}: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { model_stats: ModelStats[] }).model_stats[0]!;
}

/** Right-aligned columns with a rule under the header. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A number for a table cell; "-" when there is none. */
export const fmt = (v: number | null | undefined, digits = 2): string =>
  v === null || v === undefined || Number.isNaN(v) ? '-' : v.toFixed(digits);

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

/**
 * Cores each group kept busy over `wallS` seconds (1 = one core all the time) and its CPU ms per
 * unit (answered request or row), from the CPU seconds each spent (undefined when unreadable);
 * `outsideBench` is what the rest of the machine (`machineS`) used meanwhile.
 */
export function cpuShares(
  spent: Record<string, number | undefined>,
  machineS: number | undefined,
  wallS: number,
  units: number,
  msDigits: number,
): { coresBusy: Record<string, number | null>; cpuMsPerRequest: Record<string, number | null> } {
  const coresBusy: Record<string, number | null> = {};
  const cpuMsPerRequest: Record<string, number | null> = {};
  let ours = 0;
  for (const [group, s] of Object.entries(spent)) {
    ours += s ?? Number.NaN;
    coresBusy[group] = s === undefined ? null : roundTo(s / wallS, 2);
    cpuMsPerRequest[group] = s === undefined ? null : units === 0 ? 0 : roundTo((1000 * s) / units, msDigits);
  }
  coresBusy.outsideBench =
    machineS === undefined || Number.isNaN(ours) ? null : roundTo(Math.max(0, machineS - ours) / wallS, 2);
  coresBusy.machine = machineS === undefined ? null : roundTo(machineS / wallS, 2);
  return { coresBusy, cpuMsPerRequest };
}

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
