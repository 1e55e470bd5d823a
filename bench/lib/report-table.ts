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
