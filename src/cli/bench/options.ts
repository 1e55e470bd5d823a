/** `infergrid bench` flags, checked together: every problem is listed at once. */

import { InfergridError } from '../../errors.ts';

export const DEFAULT_URL = 'http://127.0.0.1:8000';
/** How long a run lasts when neither --duration nor --requests is given, ms. */
export const DEFAULT_DURATION_MS = 10_000;
/** A request with no answer after this long counts as a `timeout` error, ms. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Open loop: requests in flight at most; a request due beyond this is dropped (not sent). */
export const DEFAULT_MAX_IN_FLIGHT = 1000;

/**
 * Closed loop: `concurrency` loops each keep one request in flight. Open loop: requests start
 * every 1/`ratePerS` s on schedule whether or not earlier ones have answered.
 */
export type LoadMode =
  | { kind: 'concurrency'; concurrency: number }
  | { kind: 'rate'; ratePerS: number; maxInFlight: number };

/** What the generated request body holds: deterministic pseudo-random values, or zeros. */
export type GeneratedData = 'random' | 'zero';

/**
 * Every request carries the same body, so a model with a response cache would answer all but
 * the first from it: `bypass` (the default) sends `parameters.cache: "bypass"` to measure the
 * model; `use` measures the cache.
 */
export type CacheUse = 'bypass' | 'use';

export interface BenchOptions {
  /** The coordinator's base URL, without a trailing slash. */
  url: string;
  model: string;
  /** A fixed version; the model's newest (or its traffic split) when absent. */
  version: string | undefined;
  mode: LoadMode;
  /** Length of the measured window, ms; undefined when only `requests` bounds the run. */
  durationMs: number | undefined;
  /** Measured requests to issue; undefined when only `durationMs` bounds the run. */
  requests: number | undefined;
  /** Load applied before measuring starts, its results dropped, ms. */
  warmupMs: number;
  /** Per-request timeout, ms. */
  timeoutMs: number;
  /** A KServe v2 JSON request body, or a binary file for the model's BYTES input. */
  inputFile: string | undefined;
  /** Send tensors as binary tensor data (and ask for binary outputs). */
  binary: boolean;
  /** Shapes for generated inputs, by input name, overriding the model's (−1 dims become 1). */
  shapes: ReadonlyMap<string, number[]>;
  data: GeneratedData;
  cache: CacheUse;
  json: boolean;
  quiet: boolean;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `10s`, `1.5m`, `1h` in ms; a bare number is refused, because its unit would be a guess. */
export function parseDurationMs(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text);
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNIT_MS[match[2]!]!);
}

/** The parsed flag values as parseArgs gives them (strings, booleans, string arrays). */
export type BenchFlagValues = Record<string, unknown>;

export function parseBenchOptions(values: BenchFlagValues): BenchOptions {
  const problems: string[] = [];
  const str = (name: string): string | undefined => values[name] as string | undefined;

  const duration = (name: string): number | undefined => {
    const text = str(name);
    if (text === undefined) return undefined;
    const ms = parseDurationMs(text);
    if (ms === undefined)
      problems.push(`--${name} "${text}" is not a duration; write it like 500ms, 10s or 1m`);
    return ms;
  };
  const positiveInteger = (name: string): number | undefined => {
    const text = str(name);
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 1) {
      problems.push(`--${name} must be a positive integer, got "${text}"`);
      return undefined;
    }
    return n;
  };

  const model = str('model');
  if (!model) problems.push('--model <name> is required');

  let url = str('url') ?? DEFAULT_URL;
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http');
    url = url.replace(/\/+$/, '');
  } catch {
    problems.push(`--url "${url}" is not an http:// or https:// URL`);
  }

  const concurrency = positiveInteger('concurrency');
  const maxInFlight = positiveInteger('max-in-flight');
  let ratePerS: number | undefined;
  if (str('rate') !== undefined) {
    ratePerS = Number(str('rate'));
    if (!Number.isFinite(ratePerS) || ratePerS <= 0) {
      problems.push(`--rate must be a positive number of requests per second, got "${str('rate')}"`);
    }
  }
  if (concurrency !== undefined && ratePerS !== undefined) {
    problems.push(
      '--concurrency and --rate are two ways to drive the load (closed loop, open loop); give one',
    );
  }
  if (maxInFlight !== undefined && ratePerS === undefined) {
    problems.push('--max-in-flight applies to --rate (open loop); with --concurrency it is the concurrency');
  }
  const mode: LoadMode =
    ratePerS !== undefined
      ? { kind: 'rate', ratePerS, maxInFlight: maxInFlight ?? DEFAULT_MAX_IN_FLIGHT }
      : { kind: 'concurrency', concurrency: concurrency ?? 1 };

  let durationMs = duration('duration');
  const requests = positiveInteger('requests');
  if (durationMs === 0) problems.push('--duration must be longer than 0');
  if (durationMs === undefined && requests === undefined) durationMs = DEFAULT_DURATION_MS;
  const warmupMs = duration('warmup') ?? 0;
  const timeoutMs = duration('timeout') ?? DEFAULT_TIMEOUT_MS;
  if (timeoutMs === 0) problems.push('--timeout must be longer than 0');

  const shapes = new Map<string, number[]>();
  for (const text of (values.shape as string[] | undefined) ?? []) {
    const match = /^([^=]+)=(\d+(?:,\d+)*)$/.exec(text.replaceAll(' ', ''));
    if (!match) {
      problems.push(`--shape "${text}" must be <input>=<dims>, e.g. x=1,3,48,192`);
      continue;
    }
    shapes.set(match[1]!, match[2]!.split(',').map(Number));
  }

  const data = str('data') ?? 'random';
  if (data !== 'random' && data !== 'zero') problems.push(`--data must be random or zero, got "${data}"`);
  const cache = str('cache') ?? 'bypass';
  if (cache !== 'bypass' && cache !== 'use') problems.push(`--cache must be bypass or use, got "${cache}"`);

  if (problems.length > 0) {
    const list =
      problems.length === 1
        ? `${problems[0]}; `
        : `${problems.length} problems with the flags:\n${problems.map((p) => `  - ${p}\n`).join('')}`;
    throw new InfergridError('CONFIG_INVALID', `${list}see infergrid bench --help`);
  }
  return {
    url,
    model: model!,
    version: str('version'),
    mode,
    durationMs,
    requests,
    warmupMs,
    timeoutMs,
    inputFile: str('input'),
    binary: values.binary === true,
    shapes,
    data: data as GeneratedData,
    cache: cache as CacheUse,
    json: values.json === true,
    quiet: values.quiet === true,
  };
}
