/**
 * The end of a run: one JSON object (`--json`, for scripts and CI) or a table (for a person),
 * both carrying the parameters the run used, so a result is never read without its setup.
 */

import { formatBytes, formatDuration, formatMs } from './format.ts';
import type { LatencySummary } from './histogram.ts';
import type { BenchOptions } from './options.ts';
import type { BodyDescription } from './request-body.ts';
import { LATE_AFTER_MS, type RunResult } from './runner.ts';

export interface BenchReport {
  parameters: {
    url: string;
    model: string;
    /** null: the coordinator chose (the newest version, or the traffic split). */
    version: string | null;
    mode: 'concurrency' | 'rate';
    concurrency: number | null;
    /** Open loop target, requests per second. */
    rate: number | null;
    maxInFlight: number | null;
    durationMs: number | null;
    requests: number | null;
    warmupMs: number;
    timeoutMs: number;
    binary: boolean;
    data: string;
    /** `bypass`: every request asked the response cache to stand aside. */
    cache: string;
    body: BodyDescription;
  };
  scheduled: number;
  sent: number;
  completed: number;
  errors: number;
  /** Errors by kind: `500 BACKEND_ERROR`, `429 OVERLOADED`, `network ECONNREFUSED`, `timeout`. */
  errorKinds: Record<string, number>;
  /** The first message seen of each kind. */
  errorMessages: Record<string, string>;
  late: number;
  dropped: number;
  maxLagMs: number;
  elapsedMs: number;
  /** Completed requests per second. */
  throughput: number;
  latencyMs: { mean: number; min: number; p50: number; p90: number; p99: number; max: number };
  interrupted: boolean;
}

function latencyMs(s: LatencySummary): BenchReport['latencyMs'] {
  return { mean: s.meanMs, min: s.minMs, p50: s.p50Ms, p90: s.p90Ms, p99: s.p99Ms, max: s.maxMs };
}

export function benchReport(options: BenchOptions, body: BodyDescription, result: RunResult): BenchReport {
  const { mode } = options;
  return {
    parameters: {
      url: options.url,
      model: options.model,
      version: options.version ?? null,
      mode: mode.kind,
      concurrency: mode.kind === 'concurrency' ? mode.concurrency : null,
      rate: mode.kind === 'rate' ? mode.ratePerS : null,
      maxInFlight: mode.kind === 'rate' ? mode.maxInFlight : null,
      durationMs: options.durationMs ?? null,
      requests: options.requests ?? null,
      warmupMs: options.warmupMs,
      timeoutMs: options.timeoutMs,
      binary: options.binary,
      data: options.data,
      cache: options.cache,
      body,
    },
    scheduled: result.scheduled,
    sent: result.sent,
    completed: result.completed,
    errors: result.errors,
    errorKinds: Object.fromEntries(result.errorKinds.map(([kind, e]) => [kind, e.count])),
    errorMessages: Object.fromEntries(result.errorKinds.map(([kind, e]) => [kind, e.message])),
    late: result.late,
    dropped: result.dropped,
    maxLagMs: result.maxLagMs,
    elapsedMs: result.elapsedMs,
    throughput: result.throughputPerS,
    latencyMs: latencyMs(result.latency),
    interrupted: result.interrupted,
  };
}

function describeBody(body: BodyDescription, data: string): string {
  const what =
    body.source === 'generated'
      ? `generated (${data})`
      : body.source === 'json-file'
        ? `${body.file} (JSON request)`
        : `${body.file} as BYTES`;
  const inputs = body.inputs.map((t) => `${t.name} ${t.datatype} [${t.shape.join(',')}]`).join(', ');
  return `${what}, ${body.encoding}, ${formatBytes(body.bytes)}: ${inputs}`;
}

/** The report as an aligned table for a terminal. */
export function formatReport(report: BenchReport): string {
  const p = report.parameters;
  const row = (label: string, value: string): string => `  ${label.padEnd(12)} ${value}`;
  const lines: string[] = [];

  lines.push('parameters');
  lines.push(row('target', `${p.url}  model ${p.model}${p.version ? ` version ${p.version}` : ''}`));
  lines.push(
    row(
      'load',
      p.mode === 'concurrency'
        ? `closed loop, concurrency ${p.concurrency}`
        : `open loop, ${p.rate} req/s (at most ${p.maxInFlight} in flight)`,
    ),
  );
  const length = [
    ...(p.durationMs !== null ? [formatDuration(p.durationMs)] : []),
    ...(p.requests !== null ? [`${p.requests} requests`] : []),
  ].join(' or ');
  lines.push(
    row(
      'length',
      `${length}, after ${formatDuration(p.warmupMs)} warmup; timeout ${formatDuration(p.timeoutMs)}`,
    ),
  );
  lines.push(row('body', describeBody(p.body, p.data)));
  lines.push(
    row(
      'cache',
      p.cache === 'bypass'
        ? 'bypassed (parameters.cache "bypass"; --cache use to measure hits)'
        : 'used: after the first, identical requests are answered from any response cache',
    ),
  );

  lines.push('');
  lines.push(report.interrupted ? 'results (interrupted: what was measured until Ctrl-C)' : 'results');
  if (p.mode === 'rate') {
    lines.push(
      row(
        'schedule',
        `${report.scheduled} due, ${report.sent} sent, ${report.late} late (>${LATE_AFTER_MS}ms), ${report.dropped} dropped; max lag ${formatMs(report.maxLagMs)} ms`,
      ),
    );
  }
  lines.push(row('requests', `${report.completed} completed, ${report.errors} errors`));
  lines.push(row('elapsed', `${(report.elapsedMs / 1000).toFixed(3)} s`));
  lines.push(row('throughput', `${report.throughput.toFixed(1)} req/s`));
  const l = report.latencyMs;
  lines.push(
    row(
      'latency ms',
      report.completed === 0
        ? 'none completed'
        : `mean ${formatMs(l.mean)}  p50 ${formatMs(l.p50)}  p90 ${formatMs(l.p90)}  p99 ${formatMs(l.p99)}  max ${formatMs(l.max)}`,
    ),
  );

  const kinds = Object.entries(report.errorKinds);
  if (kinds.length > 0) {
    lines.push('');
    lines.push('errors');
    const width = Math.max(...kinds.map(([kind]) => kind.length));
    const countWidth = Math.max(...kinds.map(([, n]) => String(n).length));
    for (const [kind, count] of kinds) {
      const message = report.errorMessages[kind] ?? '';
      const short = message.length > 100 ? `${message.slice(0, 97)}...` : message;
      lines.push(`  ${`${kind}:`.padEnd(width + 1)} ${String(count).padStart(countWidth)}  ${short}`);
    }
  }
  return lines.join('\n');
}
