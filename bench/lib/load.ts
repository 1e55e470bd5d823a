/**
 * Load for the scenarios, always through infergrid's one load engine (src/cli/bench: BenchRun,
 * its HTTP sender and its HDR histogram), closed loop, in one of two places:
 *
 * - in this process (`runLoad`, `openLoad`): the scenario's own process is the load generator,
 *   and it reads its CPU time with process.cpuUsage;
 * - in a forked child (`startForkedLoad`, running load-child.ts), for the scenarios that read the
 *   CPU time of every process they measure: the load then never runs inside a measured process,
 *   and the child reports its own CPU time over the timed window.
 *
 * `summarize` puts timings that are not HTTP requests (in-process calls, pick costs) through the
 * same histogram, so every percentile in bench/ is computed one way.
 */

import {
  BenchRun,
  createHttpSender,
  type HttpBody,
  LatencyHistogram,
  type RequestSender,
  type RunHooks,
  type RunResult,
} from '../../src/cli/bench/index.ts';
import { forkRole } from './processes.ts';

/** A request that takes longer counts as an error, so a hung engine cannot stall the run, ms. */
const REQUEST_TIMEOUT_MS = 30_000;

/** What to send: `concurrency` closed loops, each with one request in flight. */
export interface LoadSpec {
  /**
   * The full inference URL, or several (one per coordinator) to spread the load over: closed loop
   * i always sends to URL i mod n, on its own connection(s) to it (as an L4 balancer spreads
   * connections round robin); an open loop's requests take the URLs in turn (spreadSenders).
   */
  url: string | readonly string[];
  /** Sent in turn, whichever loop sends each (a ring of bodies defeats a cache, say). */
  bodies: readonly HttpBody[];
  concurrency: number;
  /** See the HTTP sender: `per-loop` gives each loop its own connection. Default `shared`. */
  connections?: 'shared' | 'per-loop';
  /** For an https: URL, the CA (PEM) its certificate must chain to; the system's when absent. */
  ca?: string;
}

/** Load applied for `warmupMs` (not counted), then measured for `durationMs`. */
export interface LoadWindow {
  durationMs: number;
  warmupMs?: number;
}

/** Percentiles of a run, ms (or the unit summarize was given). */
export interface Percentiles {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** What a scenario keeps of a closed-loop run. */
export interface LoadFigures {
  /** Completed (2xx) requests. */
  requests: number;
  errors: number;
  /** Errors by kind: `500 BACKEND_ERROR`, `network ECONNRESET`, `timeout`. */
  errorKinds: Record<string, number>;
  durationS: number;
  /** Completed requests per second. */
  rps: number;
  latencyMs: Percentiles;
}

export const jsonBody = (value: unknown): HttpBody => ({
  body: Buffer.from(JSON.stringify(value)),
  headers: { 'content-type': 'application/json' },
});

/** A histogram's figures, as every result in bench/ carries them. */
export function percentiles(histogram: LatencyHistogram): Percentiles {
  const s = histogram.summary();
  return { mean: s.meanMs, p50: s.p50Ms, p90: s.p90Ms, p99: s.p99Ms, max: s.maxMs };
}

/** Values of any unit below 3.6e6, kept to 6 decimals, through the engine's histogram. */
export function summarize(values: readonly number[]): Percentiles {
  const histogram = new LatencyHistogram();
  for (const v of values) histogram.record(v);
  return percentiles(histogram);
}

/** One run's figures, or several runs' as one: their requests over their summed time. */
export function figures(runs: RunResult | readonly RunResult[], rpsDigits = 0): LoadFigures {
  const all = Array.isArray(runs) ? runs : [runs as RunResult];
  const histogram = new LatencyHistogram();
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  let elapsedMs = 0;
  for (const run of all) {
    histogram.add(run.histogram);
    errors += run.errors;
    elapsedMs += run.elapsedMs;
    for (const [kind, { count }] of run.errorKinds) errorKinds[kind] = (errorKinds[kind] ?? 0) + count;
  }
  const digits = 10 ** rpsDigits;
  return {
    requests: histogram.count,
    errors,
    errorKinds,
    durationS: Math.round(elapsedMs) / 1000,
    rps: elapsedMs > 0 ? Math.round(((histogram.count * 1000) / elapsedMs) * digits) / digits : 0,
    latencyMs: percentiles(histogram),
  };
}

/** Which of `targets` a request goes to: closed loop i's always to i mod targets, an open loop's in turn. */
export function targetIndex(loop: number | undefined, turn: number, targets: number): number {
  return (loop ?? turn) % targets;
}

/**
 * One sender over several (one per target), by targetIndex. A closed loop i reaches its target's
 * sender as loop floor(i / n), so each target's per-loop connections are numbered densely.
 */
export function spreadSenders(senders: readonly RequestSender[]): RequestSender {
  const n = senders.length;
  if (n === 0) throw new RangeError('spreadSenders needs at least one sender');
  if (n === 1) return senders[0]!;
  let turn = 0;
  return {
    send: (loop) =>
      loop === undefined
        ? senders[targetIndex(undefined, turn++, n)]!.send()
        : senders[targetIndex(loop, 0, n)]!.send(Math.floor(loop / n)),
    close: () => {
      for (const sender of senders) sender.close();
    },
  };
}

/** The sender a spec describes: one HTTP sender per URL, spread over (the forked child builds it too). */
export function loadSender(spec: LoadSpec): RequestSender {
  const urls = typeof spec.url === 'string' ? [spec.url] : spec.url;
  return spreadSenders(
    urls.map((url) =>
      createHttpSender({
        url: new URL(url),
        bodies: spec.bodies,
        maxSockets: spec.concurrency,
        connections: spec.connections ?? 'shared',
        timeoutMs: REQUEST_TIMEOUT_MS,
        ca: spec.ca,
      }),
    ),
  );
}

export interface OpenLoad {
  /** One closed-loop run on this load's connections (kept from one run to the next). */
  run(window: LoadWindow, hooks?: RunHooks): Promise<RunResult>;
  close(): void;
}

/** One closed-loop run through any sender (a baseline that is not an HTTP server, say). */
export function runClosedLoop(
  sender: RequestSender,
  concurrency: number,
  window: LoadWindow,
  hooks?: RunHooks,
): Promise<RunResult> {
  return new BenchRun(
    {
      mode: { kind: 'concurrency', concurrency },
      durationMs: window.durationMs,
      requests: undefined,
      warmupMs: window.warmupMs ?? 0,
    },
    sender,
    undefined,
    hooks,
  ).run();
}

/** A load whose connections stay open from run to run (targets taking turns in slices). */
export function openLoad(spec: LoadSpec): OpenLoad {
  const sender = loadSender(spec);
  return {
    run: (window, hooks) => runClosedLoop(sender, spec.concurrency, window, hooks),
    close: () => sender.close(),
  };
}

/** One closed-loop run in this process, on connections of its own. */
export async function runLoad(spec: LoadSpec, window: LoadWindow, hooks?: RunHooks): Promise<RunResult> {
  const load = openLoad(spec);
  try {
    return await load.run(window, hooks);
  } finally {
    load.close();
  }
}

// ---- the forked mode ------------------------------------------------------------------------------

/** A run as the forked child is sent it. */
export interface ForkedJob {
  type: 'run';
  spec: LoadSpec;
  window: LoadWindow;
  rpsDigits: number;
}

/** What the child sends, in this order for each job. */
export type ForkedMessage =
  | { type: 'ready' }
  /** The warm-up is over and the timed window starts now. */
  | { type: 'timed' }
  /** The timed window is over (no request starts in it any more); the child's CPU seconds in it. */
  | { type: 'stopped'; cpuS: number }
  /** Once the requests started in the window have been answered. */
  | { type: 'result'; result: LoadFigures }
  | { type: 'error'; message: string };

export interface WindowHooks {
  onMeasureStart(): void;
  /** The load generator's CPU seconds in the window. */
  onMeasureEnd(loadGeneratorCpuS: number): void;
}

export interface ForkedLoad {
  pid: number | undefined;
  /** Runs one job; resolves once every request started in its timed window has been answered. */
  run(spec: LoadSpec, window: LoadWindow, hooks: WindowHooks): Promise<LoadFigures>;
  stop(): Promise<void>;
}

/** Forks the engine's load generator (tracked: stopAll stops it); resolves once it is ready. */
export async function startForkedLoad(options: {
  readyTimeoutMs: number;
  /** Decimals of the reported requests per second. */
  rpsDigits: number;
}): Promise<ForkedLoad> {
  const child = await forkRole(
    new URL('./load-child.ts', import.meta.url).href,
    'load generator',
    options.readyTimeoutMs,
  );
  return {
    pid: child.pid,
    stop: child.stop,
    run: (spec, window, hooks) =>
      child.ask({ type: 'run', spec, window, rpsDigits: options.rpsDigits } satisfies ForkedJob, (reply) => {
        const m = reply as ForkedMessage;
        if (m.type === 'timed') hooks.onMeasureStart();
        else if (m.type === 'stopped') hooks.onMeasureEnd(m.cpuS);
        return m.type === 'result' ? m.result : undefined;
      }),
  };
}
