/**
 * `infergrid top`: the dashboard's figures in a terminal, from a coordinator's /admin/overview.
 * On a terminal it redraws every second (on the alternate screen, as top does); with --once or
 * when stdout is not a terminal it prints one snapshot and exits, so it can be piped or logged.
 */

import { setTimeout as delay } from 'node:timers/promises';
import { InfergridError } from '../errors.ts';
import { parseCommandArgs } from './args.ts';

export const TOP_HELP = `Usage: infergrid top [options]

Shows a coordinator's workers and models live: health, load, throughput, latency, batch
size, queue depth and cache hit rate (the figures of its /dashboard, from /admin/overview).

Options:
  -u, --url <url>          the coordinator's HTTP address   (default http://127.0.0.1:8000)
      --api-key <key>      an API key with the metrics scope (or INFERGRID_API_KEY)
      --once               print one snapshot and exit (also when stdout is not a terminal)
      --json               print the raw /admin/overview JSON once and exit
      --interval-ms <ms>   time between refreshes           (default 1000)
  -h, --help               show this help

Exits 1 when the coordinator cannot be reached.`;

export const DEFAULT_TOP_URL = 'http://127.0.0.1:8000';
const DEFAULT_INTERVAL_MS = 1000;
/** How long one fetch of the overview may take, ms. */
const FETCH_TIMEOUT_MS = 5000;

const CLEAR = '\x1b[H\x1b[2J';
const ENTER_ALT_SCREEN = '\x1b[?1049h\x1b[?25l';
const LEAVE_ALT_SCREEN = '\x1b[?25h\x1b[?1049l';

/** The parts of /admin/overview that top shows. */
export interface OverviewSnapshot {
  timestamp: string;
  server: {
    version: string;
    uptimeMs: number;
    requests: number;
    errors: number;
    requestsPerSecond: number;
    rateWindowS: number;
    inFlight: number;
  };
  routing: { retries: number; hedges: number };
  cache: { hitRate: number | null } | null;
  workers: {
    id: string;
    pool: string | null;
    pid: number;
    state: string;
    health: string;
    inFlight: number;
    queueDepth: number | null;
    requests: number;
    failures: number;
    models: { name: string; state: string }[];
  }[];
  models: {
    name: string;
    ready: boolean;
    requestsPerSecond: number;
    requests: number;
    errors: number;
    latencyMs: { p50: number; p99: number } | null;
    meanBatchSize: number | null;
    recentMeanBatchSize: number | null;
    queueDepth: number;
    cache: { hitRate: number | null; recentHitRate: number | null } | null;
  }[];
  unreachableWorkers: string[];
}

/** Fetches the overview; a coordinator that cannot be reached is an error saying so. */
export async function fetchOverview(
  url: string,
  apiKey?: string | undefined,
): Promise<{ json: OverviewSnapshot; text: string }> {
  const target = `${url.replace(/\/+$/, '')}/admin/overview`;
  let res: Response;
  try {
    res = await fetch(target, {
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      ...(apiKey ? { headers: { authorization: `Bearer ${apiKey}` } } : {}),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new InfergridError(
      'UNAVAILABLE',
      `cannot reach the coordinator at ${url} (${why}); is it running? Pass its address with --url`,
      { cause: err },
    );
  }
  const text = await res.text();
  if (res.status === 401 || res.status === 403) {
    throw new InfergridError(
      res.status === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED',
      `${target} answered ${res.status}: this coordinator needs an API key with the metrics scope; pass it with --api-key or INFERGRID_API_KEY`,
    );
  }
  if (!res.ok) {
    throw new InfergridError(
      'UNAVAILABLE',
      `${target} answered ${res.status}: ${text.slice(0, 200)}; is ${url} an infergrid coordinator?`,
    );
  }
  try {
    return { json: JSON.parse(text) as OverviewSnapshot, text };
  } catch (err) {
    throw new InfergridError(
      'PROTOCOL_ERROR',
      `${target} did not answer JSON; is ${url} an infergrid coordinator?`,
      {
        cause: err,
      },
    );
  }
}

const dash = '-';
const int = (x: number): string => Math.round(x).toLocaleString('en-US');
const num = (x: number | null | undefined, digits = 1): string =>
  x === null || x === undefined ? dash : x >= 1000 ? int(x) : x.toFixed(digits);
const percent = (x: number | null | undefined): string =>
  x === null || x === undefined ? dash : `${(x * 100).toFixed(1)}%`;

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** Columns padded to their widest cell; those named in `right` are right-aligned. */
function table(headers: string[], rows: string[][], right: ReadonlySet<number>): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)];
}

/** One snapshot as text, as top prints it. */
export function renderOverview(o: OverviewSnapshot, url: string): string {
  const s = o.server;
  const out = [
    `infergrid ${s.version} at ${url}  up ${duration(s.uptimeMs)}  ${o.timestamp}`,
    `${num(s.requestsPerSecond)} req/s (last ${s.rateWindowS} s)  requests ${int(s.requests)}  errors ${int(s.errors)}  ` +
      `in flight ${s.inFlight}  cache hit ${percent(o.cache?.hitRate)}  retries ${o.routing.retries}  hedges ${o.routing.hedges}`,
    '',
  ];
  out.push(
    ...table(
      [
        'WORKER',
        'POOL',
        'PID',
        'STATE',
        'HEALTH',
        'IN-FLIGHT',
        'QUEUE',
        'REQUESTS',
        'FAILURES',
        'MODELS READY',
      ],
      o.workers.map((w) => {
        const ready = w.models.filter((m) => m.state === 'ready').map((m) => m.name);
        return [
          w.id,
          w.pool ?? dash,
          String(w.pid),
          w.state,
          w.health,
          String(w.inFlight),
          w.queueDepth === null ? '?' : String(w.queueDepth),
          int(w.requests),
          int(w.failures),
          ready.length ? ready.join(',') : 'none',
        ];
      }),
      new Set([2, 5, 6, 7, 8]),
    ),
  );
  if (o.workers.length === 0) out.push('(no workers connected)');
  if (o.unreachableWorkers.length) out.push(`no statistics from: ${o.unreachableWorkers.join(', ')}`);
  out.push('');
  out.push(
    ...table(
      ['MODEL', 'READY', 'REQ/S', 'REQUESTS', 'ERRORS', 'P50 MS', 'P99 MS', 'BATCH', 'QUEUE', 'CACHE HIT'],
      o.models.map((m) => [
        m.name,
        m.ready ? 'yes' : 'no',
        num(m.requestsPerSecond),
        int(m.requests),
        int(m.errors),
        num(m.latencyMs?.p50),
        num(m.latencyMs?.p99),
        num(m.recentMeanBatchSize ?? m.meanBatchSize, 2),
        String(m.queueDepth),
        m.cache ? percent(m.cache.recentHitRate ?? m.cache.hitRate) : 'off',
      ]),
      new Set([2, 3, 4, 5, 6, 7, 8, 9]),
    ),
  );
  if (o.models.length === 0) out.push('(no models)');
  return out.join('\n');
}

function intervalFlag(value: unknown): number {
  if (value === undefined) return DEFAULT_INTERVAL_MS;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 100)
    throw new InfergridError(
      'CONFIG_INVALID',
      `--interval-ms must be a whole number of ms, at least 100; got "${value}"`,
    );
  return n;
}

export async function runTopCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('top', argv, {
    url: { type: 'string', short: 'u' },
    once: { type: 'boolean' },
    json: { type: 'boolean' },
    'interval-ms': { type: 'string' },
    'api-key': { type: 'string' },
  });
  if (values.help) {
    console.log(TOP_HELP);
    return;
  }
  const url = (values.url as string | undefined) ?? DEFAULT_TOP_URL;
  if (!/^https?:\/\//.test(url))
    throw new InfergridError('CONFIG_INVALID', `--url must start with http:// or https://, got "${url}"`);
  const intervalMs = intervalFlag(values['interval-ms']);
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.INFERGRID_API_KEY;

  const first = await fetchOverview(url, apiKey);
  if (values.json) {
    process.stdout.write(`${first.text}\n`);
    return;
  }
  if (values.once || !process.stdout.isTTY) {
    process.stdout.write(`${renderOverview(first.json, url)}\n`);
    return;
  }

  const stdout = process.stdout;
  stdout.write(ENTER_ALT_SCREEN);
  const leave = (): void => {
    stdout.write(LEAVE_ALT_SCREEN);
    process.exit(0);
  };
  process.once('SIGINT', leave);
  process.once('SIGTERM', leave);
  let last = first.json;
  let problem: string | undefined;
  for (;;) {
    const footer = problem ? `\n\n${problem} (showing the last snapshot; retrying)` : '\n\nCtrl-C to quit';
    stdout.write(`${CLEAR}${renderOverview(last, url)}${footer}`);
    await delay(intervalMs);
    try {
      last = (await fetchOverview(url, apiKey)).json;
      problem = undefined;
    } catch (err) {
      problem = (err as Error).message;
    }
  }
}
