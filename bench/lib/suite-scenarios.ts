/**
 * Which scenarios the suite knows, which flags each one takes, and what `--quick` shortens.
 *
 * A scenario's flags are read from its source (the keys of its `benchParams({...})` call)
 * rather than listed here: bench/lib/params.ts parses strictly, so passing a flag a scenario
 * does not declare would make it fail, and a scenario that gains a flag needs no change here.
 */

import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';

/** In the order they run. The last two may not exist yet; a missing file is left out. */
export const SCENARIOS = [
  'overhead',
  'routing',
  'batching',
  'cache',
  'pipeline',
  'scale-out',
  'real-model',
] as const;

/**
 * Flags for a smoke run, per scenario, applied only where the scenario declares the flag and
 * neither a runner flag nor a BENCH_* variable sets it. A scenario with no entry gets
 * DEFAULT_QUICK_FLAGS.
 */
const QUICK_FLAGS: Record<string, Record<string, string>> = {
  // keeps both concurrencies the targets are stated at
  overhead: { 'duration-s': '2', 'warmup-s': '0.5', concurrency: '1,64' },
  routing: { 'duration-ms': '300', 'warmup-ms': '100' },
  batching: { 'duration-s': '2', 'warmup-s': '0.5', concurrency: '1,32' },
  // distinct-bodies must stay above twice the highest concurrency
  cache: { 'duration-s': '1', 'warmup-s': '0.5', concurrency: '1,32', 'distinct-bodies': '256' },
  pipeline: {
    'duration-s': '2',
    'warmup-s': '0.5',
    concurrency: '1,8',
    'hop-duration-s': '1',
    'hop-concurrency': '1,8',
  },
  // on top of its own --quick: the largest fleets take minutes to start on a small machine
  'scale-out': { workers: '1,2,4,8' },
};
const DEFAULT_QUICK_FLAGS: Record<string, string> = { 'duration-s': '2', 'warmup-s': '0.5' };

/** Per-scenario time limit, s, unless --timeout-s says otherwise. */
export const DEFAULT_TIMEOUT_S = 900;
export const DEFAULT_QUICK_TIMEOUT_S = 240;

export function scenarioFile(root: string, name: string): string {
  return `${root}bench/${name}.ts`;
}

/** The scenarios whose file exists, in suite order. */
export function availableScenarios(root: string): string[] {
  return SCENARIOS.filter((name) => existsSync(scenarioFile(root, name)));
}

/**
 * The flags a scenario declares: the keys of the object passed to `benchParams(...)` in its
 * source (quoted or bare, one per line, as bench/*.ts write them). Empty when it has none.
 */
export function declaredFlags(source: string): Set<string> {
  const call = /benchParams\(\s*\{([\s\S]*?)\n\s*\}\s*\)/.exec(source);
  const flags = new Set<string>();
  if (!call) return flags;
  for (const line of call[1]!.split('\n')) {
    const key = /^\s*'?([a-z][a-z0-9-]*)'?\s*:/.exec(line);
    if (key) flags.add(key[1]!);
  }
  return flags;
}

/** A scenario that takes a bare `--quick` itself (bench/lib/params.ts has string flags only). */
function nativeQuick(source: string): boolean {
  return /['"]--quick['"]/.test(source);
}

export interface FlagInputs {
  quick: boolean;
  /** From the runner's command line, for every scenario that takes them. */
  passThrough: Record<string, string>;
  /** From --set <scenario>.<flag>=<value>. */
  sets: Record<string, string>;
  env: NodeJS.ProcessEnv;
}

export interface ResolvedFlags {
  /** Flag -> value; an empty value is a bare switch (`--quick`). */
  flags: Record<string, string>;
  notes: string[];
}

const envName = (flag: string): string => `BENCH_${flag.toUpperCase().replaceAll('-', '_')}`;

/**
 * Flags for one scenario, strongest first: --set for this scenario, a runner flag, a BENCH_*
 * variable (left for the scenario to read itself), the quick value, the scenario's default.
 * A duration in seconds is passed in milliseconds to a scenario that only takes `-ms` flags.
 */
export function resolveFlags(
  name: string,
  source: string,
  declared: Set<string>,
  inputs: FlagInputs,
): ResolvedFlags {
  const flags: Record<string, string> = {};
  const notes: string[] = [];
  const given = (flag: string): boolean =>
    flag in flags || inputs.env[envName(flag)] !== undefined || flag in inputs.sets;

  // --set names only declared flags (bench/run.ts checks)
  for (const [flag, value] of Object.entries(inputs.sets)) flags[flag] = value;
  for (const [flag, value] of Object.entries(inputs.passThrough)) {
    if (flag in inputs.sets) continue;
    if (declared.has(flag)) {
      flags[flag] = value;
      continue;
    }
    const ms = flag.replace(/-s$/, '-ms');
    if (flag.endsWith('-s') && declared.has(ms) && !given(ms)) {
      flags[ms] = String(Math.round(Number(value) * 1000));
      notes.push(`--${flag} ${value} passed as --${ms} ${flags[ms]}`);
    }
  }
  if (inputs.quick && nativeQuick(source)) {
    // the scenario knows its own smoke run; what the suite sets as well is in QUICK_FLAGS
    flags.quick = '';
    const extra = Object.entries(QUICK_FLAGS[name] ?? {}).filter(
      ([flag]) => declared.has(flag) && !given(flag),
    );
    for (const [flag, value] of extra) flags[flag] = value;
    notes.push(
      `quick: --quick passed (the scenario's own smoke run)${extra.length ? `, and ${extra.map(([f, v]) => `--${f} ${v}`).join(', ')}` : ''}`,
    );
  } else if (inputs.quick) {
    const shortened: string[] = [];
    for (const [flag, value] of Object.entries(QUICK_FLAGS[name] ?? DEFAULT_QUICK_FLAGS)) {
      if (!declared.has(flag) || given(flag)) continue;
      flags[flag] = value;
      shortened.push(`--${flag}`);
    }
    if (shortened.length) notes.push(`quick: ${shortened.join(', ')} set for a smoke run`);
  }
  return { flags, notes };
}

/** Whether something accepts TCP connections at host:port within `timeoutMs`. */
export function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * The cache scenario's Redis cases need a Redis server; without one (and without --stores from
 * the user) they are left out rather than failing the whole scenario.
 */
export async function adjustForServices(
  name: string,
  source: string,
  resolved: ResolvedFlags,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  if (name !== 'cache' || resolved.flags.stores !== undefined || env.BENCH_STORES !== undefined) return;
  const url = new URL(resolved.flags['redis-url'] ?? env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379');
  if (await reachable(url.hostname, Number(url.port || 6379), 1000)) return;
  const stores = /const STORE_CASES = \[([^\]]*)\]/.exec(source)?.[1] ?? '';
  const withoutRedis = [...stores.matchAll(/'([^']+)'/g)]
    .map((m) => m[1]!)
    .filter((s) => !s.includes('redis'));
  resolved.flags.stores = withoutRedis.join(',');
  resolved.notes.push(`no Redis at ${url.host}: the Redis stores were left out`);
}

export function readSource(file: string): string {
  return readFileSync(file, 'utf8');
}
