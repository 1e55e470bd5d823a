/**
 * The router's own cost per pick, for every balancing strategy and for the shard-key path,
 * against a baseline in the same run that does the least any router must: filter the workers
 * to the eligible ones and take the `i % n`-th. What a strategy adds over the baseline is the
 * router's bookkeeping (replica lookups, circuit checks, pick records) plus the strategy
 * itself; least-latency also builds a snapshot with each worker's decayed latency.
 *
 *   npm run bench:routing -- --duration-ms 2000
 *
 * The load is a closed loop with a fixed ring of requests in flight: each pick first releases
 * the request picked `in-flight` picks ago (its worker's inFlight drops and, as the dispatcher
 * does for every strategy, `onResult` feeds that worker's latency, 5..20 ms by worker), then
 * picks and raises the chosen worker's inFlight. A fixed ring rather than per-worker completion
 * times keeps every strategy's loop identical, at the price of in-flight counts that do not
 * depend on latency. The clock is injected and advances a fixed step per pick, and randomness
 * is a seeded generator, so the spreads are the same on every run; only the timings vary.
 *
 * Picks are timed in chunks of a multiple of the worker count and of Σweights, so the ns/pick
 * percentiles are over chunks, and round-robin and weighted spreads are exact. All cases are
 * warmed up before any is timed, so each is measured with the same JIT state. Allocation per
 * pick is read from the young generation's growth over short runs with no GC in between.
 */

import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { routingSchema } from '../../src/config/index.ts';
import { type RoutableWorker, Router, STRATEGIES, type StrategyName } from '../../src/routing/index.ts';
import { type Percentiles, summarize } from '../lib/load.ts';
import { type Charts, cell, table } from '../lib/markdown.ts';
import { runIfMain, type Scenario } from '../lib/scenario.ts';
import { barChart } from '../lib/svg.ts';

const PARAMS = {
  'duration-ms': '1000',
  'warmup-ms': '300',
  workers: '64',
  'in-flight': '64',
  seed: '1',
};
type RoutingParams = typeof PARAMS;

interface Spread {
  min: number;
  max: number;
  cv: number;
}

/** What one strategy (or the baseline) costs per pick, and how it spread the picks. */
export interface PickCost {
  picks: number;
  picksPerS: number;
  /** Over the timed chunks, ns. */
  nsPerPick: Percentiles;
  /** Mean ns per pick above the baseline's. */
  nsOverBaseline?: number;
  bytesPerPick: number;
  gc: { count: number; ms: number; share: number };
  spread: {
    picks: Spread;
    picksPerWeight?: Spread;
    pickShareByLatencyQuarter?: number[];
    /** The CV a uniformly random choice would show over as many picks, for the randomised ones. */
    uniformRandomCv?: number;
  };
}

export interface RoutingResult {
  params: RoutingParams & { latencyMs: string; weights: string; tickMs: number; chunkPicks: number };
  baseline: PickCost;
  strategies: Record<string, PickCost>;
  shardKey: PickCost;
}

const MODEL_KEY = 'bench:model';
const MIN_LATENCY_MS = 5;
const MAX_LATENCY_MS = 20;
const ALLOC_SAMPLE_PICKS = 256;
const ALLOC_SAMPLES = 31;
const RANDOMISED = new Set(['random', 'power-of-two', 'shard-key']);

interface BenchWorker extends RoutableWorker {
  inFlight: number;
  readonly index: number;
  readonly latencyMs: number;
}

/** xorshift32: a seeded uint32 stream. */
function uint32Stream(start: number): () => number {
  let x = start >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function spreadOf(values: ArrayLike<number>): Spread {
  const n = values.length;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = sum / n;
  let squares = 0;
  for (let i = 0; i < n; i++) squares += (values[i]! - mean) ** 2;
  const round = (v: number): number => Math.round(v * 1e4) / 1e4;
  return { min: round(min), max: round(max), cv: round(Math.sqrt(squares / n) / mean) };
}

function newSpaceUsedBytes(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_used_size ?? 0;
}

async function run(params: RoutingParams): Promise<RoutingResult> {
  const durationMs = Number(params['duration-ms']);
  const warmupMs = Number(params['warmup-ms']);
  const workerCount = Number(params.workers);
  const inFlight = Number(params['in-flight']);
  const seed = Number(params.seed);
  for (const [name, value] of Object.entries({ durationMs, warmupMs, workerCount, inFlight, seed })) {
    if (!(Number.isInteger(value) && value >= 1)) throw new RangeError(`${name} must be a positive integer`);
  }

  /** Clock step per pick: about the mean latency spread over the requests in flight. */
  const TICK_MS = (MIN_LATENCY_MS + MAX_LATENCY_MS) / 2 / inFlight;
  /** Weights 1..4 for the weighted case; 1 elsewhere (no other strategy reads them). */
  function makeWorkers(weighted: boolean): BenchWorker[] {
    return Array.from({ length: workerCount }, (_, index) => ({
      id: `worker-${String(index).padStart(3, '0')}`,
      inFlight: 0,
      weight: weighted ? 1 + (index % 4) : 1,
      draining: false,
      connected: true,
      health: 'healthy' as const,
      index,
      latencyMs: MIN_LATENCY_MS + ((MAX_LATENCY_MS - MIN_LATENCY_MS) * index) / Math.max(1, workerCount - 1),
    }));
  }

  interface Case {
    readonly name: string;
    readonly workers: BenchWorker[];
    /** Worker index per ring slot, -1 while empty. */
    readonly ring: Int32Array;
    ringPos: number;
    seq: number;
    readonly counts: Float64Array;
    readonly clock: { ms: number };
    choose(seq: number): BenchWorker | undefined;
    /** A request on `worker` finished after `latencyMs`. */
    release(worker: BenchWorker, latencyMs: number): void;
  }

  function routerCase(name: string, strategy: StrategyName | undefined, shardKeys: boolean): Case {
    const clock = { ms: 0 };
    const next = uint32Stream(seed);
    const router = new Router({
      routing: routingSchema.parse({}),
      now: () => clock.ms,
      random: () => next() / 2 ** 32,
    });
    const workers = makeWorkers(strategy === 'weighted');
    const config = strategy ? { strategy } : {};
    const keys = uint32Stream(seed * 7919);
    return {
      name,
      workers,
      ring: new Int32Array(inFlight).fill(-1),
      ringPos: 0,
      seq: 0,
      counts: new Float64Array(workerCount),
      clock,
      choose: shardKeys
        ? () => router.pick(MODEL_KEY, config, workers, { shardKeyHash: keys() })
        : () => router.pick(MODEL_KEY, config, workers),
      release: (worker, latencyMs) => router.onResult(MODEL_KEY, worker.id, 'success', latencyMs),
    };
  }

  /** The least a router does: the eligible workers, then the `i % n`-th. */
  function baselineCase(): Case {
    const clock = { ms: 0 };
    const workers = makeWorkers(false);
    return {
      name: 'baseline',
      workers,
      ring: new Int32Array(inFlight).fill(-1),
      ringPos: 0,
      seq: 0,
      counts: new Float64Array(workerCount),
      clock,
      choose: (seq) => {
        const eligible = workers.filter((w) => w.connected && !w.draining && w.health === 'healthy');
        return eligible[seq % eligible.length];
      },
      release: () => {},
    };
  }

  function pickMany(c: Case, picks: number): void {
    for (let k = 0; k < picks; k++) {
      const slot = c.ringPos;
      const done = c.ring[slot]!;
      if (done >= 0) {
        const w = c.workers[done]!;
        w.inFlight--;
        c.release(w, w.latencyMs);
      }
      c.clock.ms += TICK_MS;
      const w = c.choose(c.seq++);
      if (!w) throw new Error(`${c.name}: no worker picked with ${workerCount} healthy workers`);
      w.inFlight++;
      c.counts[w.index]!++;
      c.ring[slot] = w.index;
      c.ringPos = slot + 1 === inFlight ? 0 : slot + 1;
    }
  }

  const sumWeights = makeWorkers(true).reduce((sum, w) => sum + w.weight, 0);
  const period = (workerCount * sumWeights) / gcd(workerCount, sumWeights);
  const chunkPicks = period * Math.max(1, Math.ceil(1024 / period));

  interface Timing {
    picks: number;
    elapsedMs: number;
    startedAt: number;
    endedAt: number;
    chunkNsPerPick: number[];
  }

  function timeFor(c: Case, ms: number): Timing {
    const chunkNsPerPick: number[] = [];
    const startedAt = performance.now();
    const end = startedAt + ms;
    let t = startedAt;
    while (t < end) {
      pickMany(c, chunkPicks);
      const t1 = performance.now();
      chunkNsPerPick.push(((t1 - t) * 1e6) / chunkPicks);
      t = t1;
    }
    return {
      picks: chunkNsPerPick.length * chunkPicks,
      elapsedMs: t - startedAt,
      startedAt,
      endedAt: t,
      chunkNsPerPick,
    };
  }

  /** Young-generation growth over `picks` picks; a run with a GC in it shrinks and is dropped. */
  function allocatedBytes(c: Case | undefined, picks: number): number {
    const deltas: number[] = [];
    for (let i = 0; i < ALLOC_SAMPLES * 4 && deltas.length < ALLOC_SAMPLES; i++) {
      const before = newSpaceUsedBytes();
      if (c) pickMany(c, picks);
      const after = newSpaceUsedBytes();
      if (after >= before) deltas.push(after - before);
    }
    // the median through the one histogram of bench/, in KiB (it keeps values below 3.6e6)
    return summarize(deltas.map((bytes) => bytes / 1024)).p50 * 1024;
  }

  const gcEvents: { start: number; durationMs: number }[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcEvents.push({ start: e.startTime, durationMs: e.duration });
  });
  gcObserver.observe({ entryTypes: ['gc'] });

  const baseline = baselineCase();
  const strategyCases = STRATEGIES.map((s) => routerCase(s, s, false));
  const shardCase = routerCase('shard-key', undefined, true);
  const cases = [baseline, ...strategyCases, shardCase];

  for (const c of cases) timeFor(c, warmupMs);
  const timings = new Map<Case, Timing>();
  const spreads = new Map<Case, { picks: Spread; picksPerWeight?: Spread }>();
  for (const c of cases) {
    c.counts.fill(0);
    timings.set(c, timeFor(c, durationMs));
    const perWeight = c.workers.some((w) => w.weight !== 1)
      ? { picksPerWeight: spreadOf(Array.from(c.counts, (count, i) => count / c.workers[i]!.weight)) }
      : {};
    spreads.set(c, { picks: spreadOf(c.counts), ...perWeight });
  }

  const allocOverhead = allocatedBytes(undefined, 0);
  const bytesPerPick = new Map(
    cases.map((c) => [
      c,
      Math.round(Math.max(0, allocatedBytes(c, ALLOC_SAMPLE_PICKS) - allocOverhead) / ALLOC_SAMPLE_PICKS),
    ]),
  );

  // gc entries are delivered asynchronously
  await new Promise((resolve) => setTimeout(resolve, 100));
  gcObserver.disconnect();

  const round1 = (v: number): number => Math.round(v * 10) / 10;
  const baselineNs = summarize(timings.get(baseline)!.chunkNsPerPick).mean;

  /** Share of the picks taken by each quarter of the workers, fastest quarter first. */
  function shareByQuarter(c: Case): number[] {
    const total = c.counts.reduce((sum, n) => sum + n, 0);
    const quarters = [0, 0, 0, 0];
    for (const w of c.workers)
      quarters[Math.min(3, Math.floor((4 * w.index) / workerCount))]! += c.counts[w.index]!;
    return quarters.map((n) => Math.round((n / total) * 1000) / 1000);
  }

  function resultOf(c: Case) {
    const t = timings.get(c)!;
    const gc = gcEvents.filter((e) => e.start >= t.startedAt && e.start < t.endedAt);
    const gcMs = gc.reduce((sum, e) => sum + e.durationMs, 0);
    const ns = summarize(t.chunkNsPerPick);
    return {
      picks: t.picks,
      picksPerS: Math.round(t.picks / (t.elapsedMs / 1000)),
      nsPerPick: ns,
      ...(c === baseline ? {} : { nsOverBaseline: round1(ns.mean - baselineNs) }),
      bytesPerPick: bytesPerPick.get(c)!,
      gc: { count: gc.length, ms: round1(gcMs), share: Math.round((gcMs / t.elapsedMs) * 1000) / 1000 },
      spread: {
        ...spreads.get(c)!,
        ...(c.name === 'least-latency' ? { pickShareByLatencyQuarter: shareByQuarter(c) } : {}),
        // the CV a uniformly random choice would show over as many picks, for the randomised ones
        ...(RANDOMISED.has(c.name)
          ? { uniformRandomCv: Math.round(Math.sqrt((workerCount - 1) / t.picks) * 1e4) / 1e4 }
          : {}),
      },
    };
  }

  return {
    params: {
      ...params,
      latencyMs: `${MIN_LATENCY_MS}..${MAX_LATENCY_MS} by worker`,
      weights: '1..4 (weighted), 1 otherwise',
      tickMs: TICK_MS,
      chunkPicks,
    },
    baseline: resultOf(baseline),
    strategies: Object.fromEntries(strategyCases.map((c) => [c.name, resultOf(c)])),
    shardKey: resultOf(shardCase),
  };
}

// ---- the page -------------------------------------------------------------------------------------

function section(result: RoutingResult, charts: Charts): string[] {
  const cases: [string, PickCost][] = [
    ['baseline (filter, i % n)', result.baseline],
    ...Object.entries(result.strategies),
    ['shard-key', result.shardKey],
  ];
  const us = (ns: number | undefined): number | undefined => (ns === undefined ? undefined : ns / 1000);
  return [
    `The router's own cost per pick over ${result.params.workers} workers with`,
    `${result.params['in-flight']} requests in flight, in-process, for every strategy, against a baseline that`,
    'only filters the eligible workers and takes the i % n-th.',
    '',
    ...table(
      ['strategy', 'µs/pick mean', 'p50', 'p99', 'over baseline µs', 'picks/s', 'bytes/pick', 'spread CV'],
      cases.map(([name, c]) => [
        name,
        cell(us(c.nsPerPick.mean), 3),
        cell(us(c.nsPerPick.p50), 3),
        cell(us(c.nsPerPick.p99), 3),
        cell(us(c.nsOverBaseline), 3),
        cell(c.picksPerS),
        cell(c.bytesPerPick),
        cell(c.spread.picks.cv, 4),
      ]),
    ),
    charts.add(
      'routing-pick',
      barChart({
        title: 'Routing: µs per pick',
        valueLabel: 'µs per pick',
        categories: cases.map(([name]) => name),
        series: [
          { name: 'mean', values: cases.map(([, c]) => us(c.nsPerPick.mean)) },
          { name: 'p99 (over chunks)', values: cases.map(([, c]) => us(c.nsPerPick.p99)) },
        ],
        horizontal: true,
      }),
      'Routing: microseconds per pick by strategy',
    ),
    '',
  ];
}

export const routing: Scenario<RoutingResult, RoutingParams> = {
  name: 'routing',
  title: 'Routing: cost per pick',
  params: PARAMS,
  quick: { 'duration-ms': '300', 'warmup-ms': '100' },
  run,
  section,
};

await runIfMain(import.meta.url, routing);
