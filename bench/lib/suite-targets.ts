/**
 * The suite's targets, computed from a suite file: each is met, not met, or not measured in the
 * run (its scenario did not run, or printed no point the target is stated at).
 */

import type { ScenarioRun, SuiteFile } from './suite-format.ts';
import { arr, cell, firstNum, type Json, lines, num, obj, round, scenario } from './suite-json.ts';

export type TargetStatus = 'met' | 'not met' | 'not measured';

export interface TargetResult {
  id: string;
  /** The scenario it is measured in. */
  scenario: string;
  goal: string;
  status: TargetStatus;
  /** The measured figure and where it comes from; why not, when not measured. */
  measured: string;
  /** What bounds the figure, from what the run measured (CPU per request, the socket floor). */
  bound?: string;
}

/** µs of CPU per request a process (or group) spent, from an overhead run's `cpuUsPerRequest`. */
function cpuUs(run: Json | undefined, side: string, key: string): number | undefined {
  return num(run, side, 'cpuUsPerRequest', key);
}

/** How the cores were spent per request at concurrency 64, engine against bare. */
function overheadCpuBound(r: Json | undefined, cores: number): string | undefined {
  const coordinator = cpuUs(r, 'engine', 'coordinator');
  const worker = cpuUs(r, 'engine', 'worker');
  const server = cpuUs(r, 'bareFastify', 'server');
  const engineLoad = cpuUs(r, 'engine', 'loadGenerator');
  const bareLoad = cpuUs(r, 'bareFastify', 'loadGenerator');
  if ([coordinator, worker, server, engineLoad, bareLoad].some((v) => v === undefined)) return undefined;
  const engineTotal = coordinator! + worker! + engineLoad!;
  const bareTotal = server! + bareLoad!;
  return (
    `CPU per request, all processes on ${cores} cores: engine ${cell(engineTotal)} µs (coordinator ${cell(coordinator)}, ` +
    `worker ${cell(worker)}, load generator ${cell(engineLoad)}) against bare ${cell(bareTotal)} µs (fastify ${cell(server)}, ` +
    `load generator ${cell(bareLoad)}): the cores bound the engine at about ${Math.round((bareTotal / engineTotal) * 100)}% of bare`
  );
}

const NOT_MEASURED = 'not measured in this run';
/** Share of the machine's cores busy from which scale-out counts the machine as saturated (bench/scale-out.ts). */
const MACHINE_BUSY_SHARE = 0.75;
const pct = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v * 100)}%`);

/** The overhead scenario's run at one concurrency. */
export function overheadRun(run: ScenarioRun | undefined, concurrency: number): Json | undefined {
  const line = lines(run, 'overhead')[0];
  return arr(line?.runs)
    .map(obj)
    .find((r) => num(r, 'concurrency') === concurrency);
}

function overheadThroughput(suite: SuiteFile): TargetResult {
  const goal = 'overhead, concurrency 64: engine throughput ≥ 50% of bare fastify';
  const base = { id: 'overhead-c64-throughput', scenario: 'overhead', goal } as const;
  const r = overheadRun(scenario(suite, 'overhead'), 64);
  const bound = overheadCpuBound(r, suite.machine.cpus);
  const engine = num(r, 'engine', 'rps');
  const bare = num(r, 'bareFastify', 'rps');
  if (engine === undefined || bare === undefined || bare === 0)
    return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const ratio = engine / bare;
  return {
    ...base,
    status: ratio >= 0.5 ? 'met' : 'not met',
    measured: `${Math.round(ratio * 100)}% (${cell(engine)} vs ${cell(bare)} req/s)`,
    ...(bound ? { bound } : {}),
  };
}

function overheadLatency(suite: SuiteFile): TargetResult {
  const goal = 'overhead, concurrency 1: engine p50 ≤ 2× bare fastify p50';
  const base = { id: 'overhead-c1-p50', scenario: 'overhead', goal } as const;
  const run = scenario(suite, 'overhead');
  const r = overheadRun(run, 1);
  const engine = num(r, 'engine', 'latencyMs', 'p50');
  const bare = num(r, 'bareFastify', 'latencyMs', 'p50');
  if (engine === undefined || bare === undefined || bare === 0)
    return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const ratio = engine / bare;
  const hopMs = num(lines(run, 'overhead')[0], 'processRoundTrip', 'latencyMs', 'p50');
  const coordinator = cpuUs(r, 'engine', 'coordinator');
  const worker = cpuUs(r, 'engine', 'worker');
  const server = cpuUs(r, 'bareFastify', 'server');
  const bound =
    hopMs === undefined
      ? undefined
      : `the engine adds ${cell((engine - bare) * 1000)} µs to the bare route's p50 with one more process hop: ` +
        `a bare socket round trip between two processes here is ${cell(hopMs * 1000)} µs p50, and the rest is ` +
        `the coordinator's and the worker's own work` +
        (coordinator === undefined || worker === undefined || server === undefined
          ? ''
          : ` — at concurrency 1 they spend ${cell(coordinator + worker)} µs of CPU per request (coordinator ` +
            `${cell(coordinator)}, worker ${cell(worker)}) where bare fastify spends ${cell(server)}, wake-ups included ` +
            `and not all of it on the request's path`);
  return {
    ...base,
    status: ratio <= 2 ? 'met' : 'not met',
    measured: `${round(ratio, 2)}× (${cell(engine, 3)} vs ${cell(bare, 3)} ms)`,
    ...(bound ? { bound } : {}),
  };
}

// ---- real model ---------------------------------------------------------------------------------

export interface RealModelBest {
  /** Engine requests per second over onnxruntime's rows per second, both at their best. */
  ratio: number;
  rps?: number;
  concurrency?: number;
  variant?: string;
  baselineRowsPerS?: number;
  baselineBatch?: number;
}

/**
 * The real-model scenario's best engine point against onnxruntime alone at its best batch size:
 * from its summary line, else the best of its engine lines (`vsBaseline`).
 */
export function realModelBest(run: ScenarioRun | undefined): RealModelBest | undefined {
  const summary = lines(run, 'real-model', 'summary')[0];
  const bestEngine = obj(summary?.bestEngine);
  let point: Json | undefined;
  let ratio = num(summary, 'ratio') ?? num(bestEngine, 'ratio');
  if (ratio !== undefined) point = bestEngine;
  else {
    const engine = lines(run, 'real-model', 'engine').filter((l) => num(l, 'vsBaseline') !== undefined);
    if (engine.length === 0) return undefined;
    point = engine.reduce((a, b) => (num(b, 'vsBaseline')! > num(a, 'vsBaseline')! ? b : a));
    ratio = num(point, 'vsBaseline')!;
  }
  const found: RealModelBest = { ratio };
  const fields: [keyof RealModelBest, number | undefined][] = [
    ['rps', num(point, 'rps')],
    ['concurrency', num(point, 'concurrency')],
    ['baselineRowsPerS', num(summary, 'baseline', 'best', 'rowsPerS') ?? num(point, 'baselineRowsPerS')],
    ['baselineBatch', num(summary, 'baseline', 'best', 'batch') ?? num(point, 'baselineBatch')],
  ];
  for (const [key, v] of fields) if (v !== undefined) (found as unknown as Record<string, number>)[key] = v;
  if (typeof point?.variant === 'string') found.variant = point.variant;
  return found;
}

/** The real-model summary's bare-socket floor, as a clause of the bound. */
function transferText(floor: Json | undefined): string {
  const sender = num(floor, 'cpuMsPerRoundTrip', 'sender');
  const receiver = num(floor, 'cpuMsPerRoundTrip', 'receiver');
  if (sender === undefined || receiver === undefined) return '';
  const kib = (bytes: number | undefined): string => `${cell((bytes ?? 0) / 1024, 0)} KiB`;
  return (
    `; over one bare socket between two processes, the same ${kib(num(floor, 'requestBytes'))} request and ` +
    `${kib(num(floor, 'responseBytes'))} response cost ${cell(sender + receiver)} ms of CPU per round trip ` +
    `(both ends), and the engine makes two such trips`
  );
}

function realModel(suite: SuiteFile): TargetResult {
  const goal = 'real model: engine throughput ≥ 90% of onnxruntime called directly';
  const base = { id: 'real-model-vs-direct', scenario: 'real-model', goal } as const;
  const run = scenario(suite, 'real-model');
  const top = realModelBest(run);
  if (!top) return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const summary = lines(run, 'real-model', 'summary')[0];
  const cpu = obj(summary?.cpuPerRow);
  const direct = num(cpu, 'baselineMs');
  const engineCpu = obj(cpu?.engine);
  const engineMs = num(engineCpu, 'totalMs');
  const bound =
    direct === undefined || engineMs === undefined
      ? undefined
      : `CPU per request, all processes on ${suite.machine.cpus} cores: engine ${cell(engineMs)} ms ` +
        `(workers ${cell(num(engineCpu, 'workersMs'))}, coordinator ${cell(num(engineCpu, 'coordinatorMs'))}, load generator ` +
        `${cell(num(engineCpu, 'loadGeneratorMs'))}) against onnxruntime's ${cell(direct)} ms per row: the cores bound the ` +
        `engine at about ${Math.round((direct / engineMs) * 100)}% of direct. What the engine adds is ` +
        `moving the tensors: the request in, and the response out twice (worker -> coordinator -> client)` +
        transferText(obj(summary?.transferFloor));
  return {
    ...base,
    status: top.ratio >= 0.9 ? 'met' : 'not met',
    measured:
      `${Math.round(top.ratio * 100)}% (engine at its best: ${cell(top.rps)} req/s` +
      `${top.concurrency === undefined ? '' : ` at concurrency ${top.concurrency}`}` +
      `${top.variant ? `, batching ${top.variant}` : ''}; onnxruntime alone: ${cell(top.baselineRowsPerS)} rows/s` +
      `${top.baselineBatch === undefined ? '' : ` at batch ${top.baselineBatch}`})`,
    ...(bound ? { bound } : {}),
  };
}

// ---- scale-out -------------------------------------------------------------------------------------

export interface ScaleOutPoint {
  workers: number;
  concurrency?: number;
  rps?: number;
  idealRps?: number;
  /** The ideal was not in the results: workers × the smallest fleet's throughput per worker. */
  idealAssumed?: boolean;
  ratio?: number;
  p50Ms?: number;
  p99Ms?: number;
  meanBatchSize?: number;
  coordinatorCores?: number;
  coordinatorCpuMsPerRequest?: number;
  /** 1000 / coordinatorCpuMsPerRequest: what one coordinator core could answer. */
  coordinatorRpsPerCore?: number;
  /** Cores the whole machine kept busy: with every process on one machine, a bound of its own. */
  machineCores?: number;
  saturated?: boolean;
  /** What the scenario says held the point back, when saturated. */
  boundBy?: string;
}

function pointOf(o: Json): ScaleOutPoint | undefined {
  const workers = num(o, 'workers');
  const rps = firstNum(o, [['rps'], ['throughput'], ['throughputRps'], ['result', 'rps']]);
  if (workers === undefined || rps === undefined) return undefined;
  const p: ScaleOutPoint = { workers, rps };
  const set = <K extends keyof ScaleOutPoint>(key: K, value: ScaleOutPoint[K] | undefined): void => {
    if (value !== undefined) p[key] = value;
  };
  set('concurrency', num(o, 'concurrency'));
  set('idealRps', firstNum(o, [['idealRps'], ['ideal'], ['idealThroughput'], ['ideal', 'rps']]));
  set('ratio', firstNum(o, [['ratio'], ['ofIdeal'], ['efficiency']]));
  set('p50Ms', firstNum(o, [['latencyMs', 'p50'], ['p50Ms']]));
  set('p99Ms', firstNum(o, [['latencyMs', 'p99'], ['p99Ms']]));
  set('meanBatchSize', firstNum(o, [['worker', 'meanBatchSize'], ['meanBatchSize']]));
  set('coordinatorCores', firstNum(o, [['coordinatorCores'], ['coresBusy', 'coordinator']]));
  const us = firstNum(o, [['coordinatorCpuUsPerRequest'], ['cpuUsPerRequest', 'coordinator']]);
  set(
    'coordinatorCpuMsPerRequest',
    firstNum(o, [['coordinatorCpuMsPerRequest'], ['cpuMsPerRequest', 'coordinator']]) ??
      (us === undefined ? undefined : us / 1000),
  );
  set('machineCores', firstNum(o, [['machineCores'], ['coresBusy', 'machine']]));
  set('coordinatorRpsPerCore', num(o, 'coordinatorRpsPerCore'));
  if (typeof o.saturated === 'boolean') p.saturated = o.saturated;
  if (typeof o.boundBy === 'string') p.boundBy = o.boundBy;
  return p;
}

/**
 * The scale-out points, one per fleet size: from lines that are points themselves, merged with
 * the points listed inside a summary line (a line's own fields win).
 */
export function scaleOutPoints(run: ScenarioRun | undefined): ScaleOutPoint[] {
  const byWorkers = new Map<number, ScaleOutPoint>();
  const add = (p: ScaleOutPoint | undefined): void => {
    if (p) byWorkers.set(p.workers, { ...p, ...byWorkers.get(p.workers) });
  };
  const all = run?.results ?? [];
  for (const line of all) add(pointOf(line));
  for (const line of all)
    for (const key of ['points', 'runs'])
      for (const item of arr(line[key])) {
        const o = obj(item);
        if (o) add(pointOf(o));
      }
  const points = [...byWorkers.values()].sort((a, b) => a.workers - b.workers);
  const base = points.find((p) => p.rps !== undefined && p.rps > 0);
  for (const p of points) {
    if (p.idealRps === undefined && base) {
      p.idealRps = (p.workers * base.rps!) / base.workers;
      p.idealAssumed = true;
    }
    if (p.ratio === undefined && p.rps !== undefined && p.idealRps) p.ratio = p.rps / p.idealRps;
  }
  return points;
}

/** Cores a coordinator may keep busy before it counts as at its limit: the scenario's own setting. */
export function saturationCores(run: ScenarioRun | undefined): number {
  for (const line of run?.results ?? []) {
    const v = Number(obj(line.params)?.['saturation-cores']);
    if (v > 0) return v;
  }
  return 0.85;
}

function scaleOut(suite: SuiteFile): TargetResult {
  const goal = "scale-out: throughput ≥ 90% of ideal up to the coordinator's limit";
  const base = { id: 'scale-out-vs-ideal', scenario: 'scale-out', goal } as const;
  const run = scenario(suite, 'scale-out');
  const points = scaleOutPoints(run).filter((p) => p.ratio !== undefined);
  if (points.length === 0) return { ...base, status: 'not measured', measured: NOT_MEASURED };
  // the limit: the first fleet whose CPU ran out — the coordinator's share of a core, or the
  // machine's cores shared by every process (which, on a small machine, run out first). A fleet
  // under its share of ideal for any other reason (round trips, the load generator) is judged.
  const limitCores = saturationCores(run);
  const cpus = suite.machine.cpus;
  const limit = points.find(
    (p) =>
      (p.coordinatorCores !== undefined && p.coordinatorCores >= limitCores) ||
      /^(coordinator|machine) CPU/.test(p.boundBy ?? '') ||
      (p.boundBy === undefined &&
        p.machineCores !== undefined &&
        p.machineCores >= MACHINE_BUSY_SHARE * cpus),
  );
  const below = limit ? points.filter((p) => p.workers < limit.workers) : points;
  const perCore = limit?.coordinatorRpsPerCore ?? points.at(-1)!.coordinatorRpsPerCore;
  const perCoreText =
    perCore === undefined
      ? ''
      : `; one coordinator core answers about ${cell(perCore)} req/s (1000 / its ${cell(
          1000 / perCore,
          3,
        )} ms of CPU per request${limit ? ` at ${limit.workers} workers` : ''})`;
  const coordinatorFirst = limit?.coordinatorCores !== undefined && limit.coordinatorCores >= limitCores;
  const limitText = limit
    ? `the limit is reached at ${limit.workers} workers: ${cell(limit.rps)} of ${cell(limit.idealRps)} req/s ` +
      `(${pct(limit.ratio)}), bound by ${limit.boundBy ?? `${coordinatorFirst ? 'the coordinator' : 'the machine'} (${cell(limit.coordinatorCores)} coordinator cores busy)`}` +
      (coordinatorFirst ? '' : ": the machine's cores ran out before the coordinator's")
    : `no fleet up to ${points.at(-1)!.workers} workers ran out of CPU`;
  if (below.length === 0)
    return {
      ...base,
      status: 'not measured',
      measured: `${NOT_MEASURED}: ${limitText}, the smallest fleet measured${perCoreText}`,
    };
  const worst = below.reduce((a, b) => (b.ratio! < a.ratio! ? b : a));
  const range = below.length === 1 ? `${below[0]!.workers}` : `${below[0]!.workers}–${below.at(-1)!.workers}`;
  return {
    ...base,
    status: worst.ratio! >= 0.9 ? 'met' : 'not met',
    measured:
      `${pct(worst.ratio)} of ideal at worst over ${range} workers (${worst.workers}: ${cell(worst.rps)} of ` +
      `${cell(worst.idealRps)} req/s${worst.idealAssumed ? ', ideal assumed linear' : ''}); ${limitText}${perCoreText}`,
    ...(limit?.boundBy ? { bound: `at ${limit.workers} workers, ${limit.boundBy}` } : {}),
  };
}

export function computeTargets(suite: SuiteFile): TargetResult[] {
  return [overheadThroughput(suite), overheadLatency(suite), realModel(suite), scaleOut(suite)];
}
