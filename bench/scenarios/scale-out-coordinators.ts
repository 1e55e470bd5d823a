/**
 * The scale-out scenario's second sweep (scale-out.ts runs it, `--coordinators 1,2,3`): K
 * coordinators side by side over the same `sim` workers, the load generator spreading its
 * clients round robin over the K coordinators' HTTP ports, for each K in the list; each point is
 * held against one coordinator, in the same run.
 *
 *   npm run bench:scale-out -- --workers none --coordinators 1,2,3
 *   npm run bench:scale-out -- --workers none --quick          a smoke run, ~30 s
 *
 * For each point: total req/s, req/s per coordinator, speed-up against one coordinator, what each
 * coordinator answered (its own count), the coordinators' CPU µs per request (summed over them),
 * req/s per coordinator core, each process group's share of the machine's CPU over the timed
 * window (coordinators, workers, load generator, idle coordinators, the rest of the machine), and
 * a verdict saying what bounds the point on this machine, with what would bound it on a machine
 * with a core for every process (each group's capacity from its CPU per request).
 *
 * It shares the workers sweep's flags where they mean the same: --duration-s (each point's timed
 * seconds, split over the rounds), --warmup-s (before every round), --fleet-warmup-s (once, on
 * every coordinator), --max-batch-size, --max-queue-delay-ms, --max-concurrency, --encoding and
 * --saturation-cores (one coordinator keeping this many cores busy is at its event loop's limit).
 *
 * Trade-offs:
 * - The model costs nothing (`sim`, latencyMs 0 by default, batching on): the coordinators, which
 *   parse HTTP and JSON, do more per request than the workers, which see only RPC frames, so with a
 *   core each the coordinators bound the fleet, not the workers. The verdict checks it from the
 *   measured CPU per request rather than assuming it.
 * - The fleet is started once: the largest K's coordinators and the workers, every worker dialing
 *   every coordinator. A point with fewer coordinators leaves the others idle (a heartbeat each;
 *   their CPU is its own group), so no point pays a restart and every point runs on the same
 *   warmed-up processes. Clients grow with K (--clients-per-coordinator each), so each
 *   coordinator sees the same load at every point.
 * - Client i keeps its connection to coordinator i mod K, as an L4 balancer spreads connections:
 *   closed loops then spread the requests evenly, and each coordinator's own count over the window
 *   is reported to show it.
 * - One load generator process by default: on a machine with many cores it may be the first to
 *   run out (the verdict says so from its CPU per request); --load-generators N splits each
 *   point's clients over N processes (client g still on coordinator g mod K), their figures
 *   added up (rates summed, percentiles weighted by requests; their timed windows open within
 *   the time it takes to open their connections). On a small machine more processes only contend.
 * - The points take turns in rounds (1, 2, 3, then 2, 3, 1, ...; --coordinator-rounds), so the
 *   VM's drift from minute to minute reaches every point alike. Requests, time and CPU are
 *   pooled exactly; a point's latency percentiles are the rounds' weighted by their requests.
 * - On 2 cores the machine, not the coordinators, is the bottleneck: every process shares both
 *   cores. What shows the coordinators are no shared bottleneck there is their CPU per request
 *   staying flat as coordinators are added (a shared lock, cache or Redis round trip would make
 *   each request cost more, or leave cores idle).
 */

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { encodeInferRequest } from '../../src/client/index.ts';
import { adminWorkers, type Spawned, spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import {
  addSpent,
  type CpuMark,
  type CpuSpent,
  cpuFigures,
  cpuMark,
  cpuSpent,
  DISTURBED_CORES,
  noteDisturbance,
  rssMiB,
} from '../lib/cpu.ts';
import { type LoadFigures, type LoadSpec, startForkedLoad } from '../lib/load.ts';
import { cell, pct, round, table } from '../lib/markdown.ts';
import { scratchDir, track } from '../lib/processes.ts';
import { NOT_MEASURED, numberList, type TargetResult } from '../lib/scenario.ts';

/** The sweep's flags, part of the scale-out scenario's. */
export const COORDINATOR_PARAMS = {
  /** Coordinator counts to measure, side by side over the same workers; `none` skips the sweep. */
  coordinators: '1,2,3',
  /** `sim` workers every coordinator shares. */
  'coordinator-workers': '2',
  /** The sim model's cost of one batch in this sweep, ms: 0 leaves the engine's own cost. */
  'coordinator-latency-ms': '0',
  /** Closed-loop clients per coordinator: a point with K coordinators runs K × this. */
  'clients-per-coordinator': '64',
  /** Rounds the points take turns in; each point's timed load is split over them. */
  'coordinator-rounds': '2',
  /**
   * Load generator processes sharing each point's clients: 1 on a small machine (more only
   * contend for its cores); more where one would run out of its core before the coordinators.
   */
  'load-generators': '1',
};
export type CoordinatorParams = typeof COORDINATOR_PARAMS;

/** What the sweep shares with the workers sweep's flags. */
export interface SharedSettings {
  durationMs: number;
  warmupMs: number;
  fleetWarmupMs: number;
  maxBatchSize: number;
  maxQueueDelayMs: number;
  maxConcurrency: number;
  saturationCores: number;
  encoding: 'json' | 'binary';
}

const MODEL = 'sim-c';
const SIM_ELEMENTS = 16;
const FLEET_READY_TIMEOUT_MS = 120_000;
const LOAD_GENERATOR_READY_TIMEOUT_MS = 60_000;
/** Share of the machine's cores busy above which a point counts as bound by the machine's CPU. */
export const MACHINE_BUSY_SHARE = 0.75;
/** A rise in the coordinators' CPU per request over one coordinator's beyond this is contention. */
export const FLAT_CPU_RISE = 0.25;
/** The speed-up two coordinators should reach where the cores allow it (issue 17). */
export const TARGET_SPEED_UP = 1.8;

export function coordinatorSettings(params: CoordinatorParams) {
  const s = {
    counts:
      params.coordinators === 'none'
        ? []
        : [...new Set(numberList(params.coordinators))].sort((a, b) => a - b),
    workers: Number(params['coordinator-workers']),
    latencyMs: Number(params['coordinator-latency-ms']),
    clientsPerCoordinator: Number(params['clients-per-coordinator']),
    rounds: Number(params['coordinator-rounds']),
    loadGenerators: Number(params['load-generators']),
  };
  const problems: string[] = [];
  if (params.coordinators !== 'none' && (s.counts.length === 0 || s.counts.some((n) => !Number.isInteger(n))))
    problems.push(`--coordinators must list positive integers or be "none", got "${params.coordinators}"`);
  if (!(Number.isInteger(s.workers) && s.workers >= 1))
    problems.push('--coordinator-workers must be a positive integer');
  if (!(s.latencyMs >= 0)) problems.push('--coordinator-latency-ms must be >= 0');
  if (!(Number.isInteger(s.clientsPerCoordinator) && s.clientsPerCoordinator >= 1))
    problems.push('--clients-per-coordinator must be a positive integer');
  if (!(Number.isInteger(s.rounds) && s.rounds >= 1))
    problems.push('--coordinator-rounds must be a positive integer');
  if (!(Number.isInteger(s.loadGenerators) && s.loadGenerators >= 1))
    problems.push('--load-generators must be a positive integer');
  return { settings: s, problems };
}
export type CoordinatorSettings = ReturnType<typeof coordinatorSettings>['settings'];

// ---- the result -----------------------------------------------------------------------------------

/** Process groups whose CPU is read: the point's coordinators, the others (idle), the workers, the load. */
type Group = 'coordinators' | 'idleCoordinators' | 'workers' | 'loadGenerator';

export interface CoordinatorPoint extends LoadFigures {
  coordinators: number;
  concurrency: number;
  /** Requests each coordinator answered over the timed windows, by its own count. */
  byCoordinator: number[];
  rpsPerCoordinator: number;
  /** rps / rps with one coordinator; null when one coordinator was not measured. */
  speedUp: number | null;
  /** CPU µs per request over the timed windows; `coordinators` summed over the point's coordinators. */
  cpuUsPerRequest: Record<Group, number | null>;
  /** Cores kept busy on average; `busiestCoordinator` is the one coordinator that kept the most. */
  coresBusy: Record<Group | 'busiestCoordinator' | 'machine' | 'outsideBench', number | null>;
  /** Each group's share of the machine's CPU (cores × wall time); `rest` is everything else busy, `idle` the unused. */
  cpuShare: Record<Group | 'rest' | 'idle', number | null>;
  /** Requests one coordinator core answers at this CPU per request: 1e6 / coordinator µs per request. */
  rpsPerCoordinatorCore: number | null;
  /** coordinator µs per request / one coordinator's; null for one coordinator or when not measured. */
  cpuPerRequestVsOne: number | null;
  /** With a core for every process: what each group could answer, req/s (from its CPU per request). */
  capacityRps: { coordinators: number | null; workers: number | null; loadGenerator: number | null };
  /** What bounds the point on this machine. */
  boundBy: 'machine CPU' | 'coordinator CPU' | 'load generator CPU' | 'workers CPU' | 'round trips';
  verdict: string;
}

export interface CoordinatorSweepResult {
  workers: number;
  loadGenerators: number;
  model: string;
  cores: number;
  startS: number;
  coordinatorRssMiB: number | null;
  points: CoordinatorPoint[];
  statement: string;
  disturbed: string[];
}

// ---- pure parts (tests/unit/bench-parts.test.ts) -----------------------------------------------------

/** Several rounds' figures as one: requests, errors and time summed; percentiles weighted by requests. */
export function poolRounds(rounds: readonly LoadFigures[]): LoadFigures {
  const requests = rounds.reduce((n, r) => n + r.requests, 0);
  const durationS = rounds.reduce((n, r) => n + r.durationS, 0);
  const errorKinds: Record<string, number> = {};
  for (const r of rounds)
    for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
  const weighted = (key: keyof LoadFigures['latencyMs']): number =>
    requests === 0 ? 0 : round(rounds.reduce((n, r) => n + r.latencyMs[key] * r.requests, 0) / requests);
  return {
    requests,
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    errorKinds,
    durationS: round(durationS),
    rps: durationS > 0 ? Math.round(requests / durationS) : 0,
    latencyMs: {
      mean: weighted('mean'),
      p50: weighted('p50'),
      p90: weighted('p90'),
      p99: weighted('p99'),
      max: Math.max(0, ...rounds.map((r) => r.latencyMs.max)),
    },
  };
}

/**
 * Parallel load generators' figures over the same window as one: requests, errors and rates
 * added, the longest window, percentiles weighted by requests.
 */
export function combineParallel(runs: readonly LoadFigures[]): LoadFigures {
  const pooled = poolRounds(runs);
  return {
    ...pooled,
    durationS: Math.max(0, ...runs.map((r) => r.durationS)),
    rps: runs.reduce((n, r) => n + r.rps, 0),
  };
}

/**
 * A point's `clients` over `generators` load generators (the first ones get one more when they do
 * not divide), each generator's URLs rotated by the index of its first client, so that client g
 * of the whole point goes to target g mod targets whichever generator runs it. Generators left
 * without a client are left out.
 */
export function splitClients(
  clients: number,
  generators: number,
  targets: number,
): { clients: number; firstTarget: number }[] {
  const out: { clients: number; firstTarget: number }[] = [];
  let first = 0;
  for (let j = 0; j < generators; j++) {
    const n = Math.floor(clients / generators) + (j < clients % generators ? 1 : 0);
    if (n > 0) out.push({ clients: n, firstTarget: first % targets });
    first += n;
  }
  return out;
}

/** Each point's throughput against the one-coordinator point's: rps(K) / rps(1), null without it. */
export function speedUps(points: readonly { coordinators: number; rps: number }[]): (number | null)[] {
  const one = points.find((p) => p.coordinators === 1);
  return points.map((p) => (one && one.rps > 0 ? round(p.rps / one.rps, 2) : null));
}

/** Requests per second a group of `processes` (a core each) answers at `usPerRequest` of CPU. */
export function capacityRps(processes: number, usPerRequest: number | null): number | null {
  return usPerRequest === null || usPerRequest <= 0 ? null : Math.round((processes * 1e6) / usPerRequest);
}

/** What a verdict reads of a point. */
export type VerdictInput = Pick<
  CoordinatorPoint,
  'coordinators' | 'coresBusy' | 'cpuUsPerRequest' | 'capacityRps' | 'cpuPerRequestVsOne'
>;

/**
 * What bounds a point, from the cores each group kept busy, and a sentence saying why: one
 * coordinator's event loop (≥ saturationCores), the machine (MACHINE_BUSY_SHARE of its cores
 * busy), the load generator's event loop, the workers', else the clients' round trips. Then, from the CPU per request,
 * what would bound it with a core for every process, and (K > 1) whether the coordinators' CPU
 * per request stayed flat against one coordinator's.
 */
export function verdictOf(
  p: VerdictInput,
  options: { cores: number; workers: number; loadGenerators: number; saturationCores: number },
): { boundBy: CoordinatorPoint['boundBy']; verdict: string } {
  const busy = p.coresBusy;
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(2));
  const used =
    `${f(busy.machine)} of ${options.cores} cores busy: coordinators ${f(busy.coordinators)}, ` +
    `workers ${f(busy.workers)}, load generator ${f(busy.loadGenerator)}, rest ${f(
      busy.machine === null ||
        busy.coordinators === null ||
        busy.workers === null ||
        busy.loadGenerator === null
        ? null
        : Math.max(0, busy.machine - busy.coordinators - busy.workers - busy.loadGenerator),
    )}`;
  let boundBy: CoordinatorPoint['boundBy'];
  // a coordinator is one event loop: once it keeps a core busy, another coordinator is what helps
  if (busy.busiestCoordinator !== null && busy.busiestCoordinator >= options.saturationCores)
    boundBy = 'coordinator CPU';
  else if (busy.machine !== null && busy.machine >= MACHINE_BUSY_SHARE * options.cores)
    boundBy = 'machine CPU';
  else if (
    busy.loadGenerator !== null &&
    busy.loadGenerator >= options.saturationCores * options.loadGenerators
  )
    boundBy = 'load generator CPU';
  else if (busy.workers !== null && busy.workers >= options.saturationCores * options.workers)
    boundBy = 'workers CPU';
  else boundBy = 'round trips';
  const parts = [`${boundBy} (${used})`];
  const cap = p.capacityRps;
  const named = (
    [
      ['the coordinators', cap.coordinators],
      ['the workers', cap.workers],
      ['the load generator', cap.loadGenerator],
    ] as [string, number | null][]
  ).filter((e): e is [string, number] => e[1] !== null);
  if (named.length > 0) {
    const first = named.reduce((a, b) => (b[1] < a[1] ? b : a));
    parts.push(
      `with a core per process: coordinators ~${cell(cap.coordinators)}, workers ~${cell(cap.workers)}, ` +
        `load generator${options.loadGenerators === 1 ? '' : `s (${options.loadGenerators})`} ~${cell(cap.loadGenerator)} req/s, ` +
        `so ${first[0]} would bound it`,
    );
  }
  if (p.coordinators > 1 && p.cpuPerRequestVsOne !== null) {
    const rise = p.cpuPerRequestVsOne - 1;
    const change = `${rise >= 0 ? '+' : ''}${Math.round(rise * 100)}%`;
    parts.push(
      rise <= FLAT_CPU_RISE
        ? `coordinators' CPU per request ${cell(p.cpuUsPerRequest.coordinators, 0)} µs, ${change} against one ` +
            `coordinator's: adding coordinators does not make a request cost more, so they share no bottleneck`
        : `coordinators' CPU per request ${cell(p.cpuUsPerRequest.coordinators, 0)} µs, ${change} against one ` +
            `coordinator's: each request costs more with more coordinators (contention for the cores or a shared part)`,
    );
  }
  if (busy.outsideBench !== null && busy.outsideBench > DISTURBED_CORES)
    parts.push(
      `other work kept ${busy.outsideBench.toFixed(2)} cores busy meanwhile: these figures are suspect`,
    );
  return { boundBy, verdict: parts.join('; ') };
}

// ---- the run --------------------------------------------------------------------------------------

function configYaml(c: CoordinatorSettings, s: SharedSettings): string {
  const spec = (name: string) => `[{ name: ${name}, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]`;
  return `# scale-out, coordinators sweep: every worker hosts ${MODEL}
coordinator: { host: 127.0.0.1, port: 0, rpcPort: 0 }
logging: { level: warn }
models:
  - name: ${MODEL}
    backend: sim
    sim: { latencyMs: ${c.latencyMs} }
    maxBatchSize: ${s.maxBatchSize}
    batching: { enabled: true, maxQueueDelayMs: ${s.maxQueueDelayMs} }
    inputs: ${spec('INPUT0')}
    outputs: ${spec('OUTPUT0')}
`;
}

interface CoordinatorFleet {
  coordinators: Spawned[];
  urls: string[];
  workers: Spawned[];
  startS: number;
}

/** `count` coordinators, then the workers, each dialing every one; resolves once every coordinator sees them all ready. */
async function startFleet(configFile: string, count: number, workers: number): Promise<CoordinatorFleet> {
  const t0 = performance.now();
  const coordinators = await Promise.all(
    Array.from({ length: count }, () =>
      spawnProcess(['coordinator', '--config', configFile], {
        cleanup: track,
        readyTimeoutMs: FLEET_READY_TIMEOUT_MS,
      }),
    ),
  );
  const dial = coordinators.flatMap((c) => ['--coordinator', `127.0.0.1:${c.ready.rpcPort}`]);
  const started = await Promise.all(
    Array.from({ length: workers }, (_, i) =>
      spawnProcess(['worker', '--config', configFile, '--id', `cw${i + 1}`, ...dial], {
        cleanup: track,
        readyTimeoutMs: FLEET_READY_TIMEOUT_MS,
      }),
    ),
  );
  const urls = coordinators.map((c) => `http://127.0.0.1:${c.ready.httpPort}`);
  for (const url of urls)
    await waitFor(
      `${workers} workers with ${MODEL} ready at ${url}`,
      async () => {
        const listed = await adminWorkers(url);
        return (
          listed.filter((w) => w.models.some((m) => m.name === MODEL && m.state === 'ready')).length >=
          workers
        );
      },
      FLEET_READY_TIMEOUT_MS,
    );
  return { coordinators, urls, workers: started, startS: round((performance.now() - t0) / 1000, 1) };
}

/** Requests a coordinator has answered since it started, by its own count (GET /admin/overview). */
async function answered(url: string): Promise<number> {
  const res = await fetch(`${url}/admin/overview`);
  if (!res.ok) throw new Error(`overview of ${url}: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { server: { requests: number } }).server.requests;
}

interface Round {
  load: LoadFigures;
  /** CPU of each coordinator of the point (`c1`...), the idle ones, the workers and the load generator. */
  cpu: CpuSpent;
  byCoordinator: number[];
}

export async function runCoordinatorSweep(
  c: CoordinatorSettings,
  s: SharedSettings,
): Promise<CoordinatorSweepResult> {
  const largest = c.counts.at(-1)!;
  const configFile = join(scratchDir(), 'coordinators.yaml');
  writeFileSync(configFile, configYaml(c, s));
  const [fleet, loadGenerators] = await Promise.all([
    startFleet(configFile, largest, c.workers),
    Promise.all(
      Array.from({ length: c.loadGenerators }, () =>
        startForkedLoad({ readyTimeoutMs: LOAD_GENERATOR_READY_TIMEOUT_MS, rpsDigits: 0 }),
      ),
    ),
  ]);
  console.error(
    `scale-out: ${largest} coordinators and ${c.workers} workers (each dialing every coordinator) ready in ${fleet.startS} s`,
  );
  const request = encodeInferRequest(
    [
      {
        name: 'INPUT0',
        datatype: 'FP32',
        shape: [1, SIM_ELEMENTS],
        data: Float32Array.from({ length: SIM_ELEMENTS }, (_, i) => i / 8),
      },
    ],
    { binary: s.encoding === 'binary' },
  );
  const body = { body: Buffer.from(request.body), headers: request.headers };
  const concurrencyFor = (k: number): number => Math.min(s.maxConcurrency, k * c.clientsPerCoordinator);
  /** The point's clients, one spec per load generator that has any. */
  const specs = (k: number): LoadSpec[] => {
    const urls = fleet.urls.slice(0, k).map((u) => `${u}/v2/models/${MODEL}/infer`);
    return splitClients(concurrencyFor(k), loadGenerators.length, k).map(({ clients, firstTarget }) => ({
      url: [...urls.slice(firstTarget), ...urls.slice(0, firstTarget)],
      bodies: [body],
      concurrency: clients,
      connections: 'per-loop',
    }));
  };
  /**
   * Runs a point's load on every generator at once. The CPU window opens when the first
   * generator's timed window does and closes when the last one's does (they start within the
   * time it takes to open their connections); the generators' own CPU is each one's own window.
   */
  const runAll = async (
    k: number,
    window: { durationMs: number; warmupMs?: number },
    hooks: { onMeasureStart(): void; onMeasureEnd(loadGeneratorCpuS: number): void },
  ): Promise<LoadFigures> => {
    const jobs = specs(k);
    let started = 0;
    let ended = 0;
    let cpuS = 0;
    const runs = await Promise.all(
      jobs.map((spec, j) =>
        loadGenerators[j]!.run(spec, window, {
          onMeasureStart() {
            if (started++ === 0) hooks.onMeasureStart();
          },
          onMeasureEnd(own) {
            cpuS += own;
            if (++ended === jobs.length) hooks.onMeasureEnd(cpuS);
          },
        }),
      ),
    );
    return combineParallel(runs);
  };
  const groups = (k: number) => ({
    ...Object.fromEntries(fleet.coordinators.slice(0, k).map((x, i) => [`c${i + 1}`, [x.child.pid]])),
    idleCoordinators: fleet.coordinators.slice(k).map((x) => x.child.pid),
    workers: fleet.workers.map((w) => w.child.pid),
  });

  // every coordinator and worker runs its code once before anything is timed
  if (s.fleetWarmupMs > 0)
    await runAll(largest, { durationMs: s.fleetWarmupMs }, { onMeasureStart() {}, onMeasureEnd() {} });

  const rounds: Round[][] = c.counts.map(() => []);
  const roundMs = s.durationMs / c.rounds;
  for (let r = 0; r < c.rounds; r++)
    for (let j = 0; j < c.counts.length; j++) {
      const i = (r + j) % c.counts.length;
      const k = c.counts[i]!;
      const urls = fleet.urls.slice(0, k);
      let before: CpuMark | undefined;
      let after: CpuMark | undefined;
      let countsBefore: Promise<number[]> | undefined;
      let loadGeneratorCpuS = 0;
      const load = await runAll(
        k,
        { durationMs: roundMs, warmupMs: s.warmupMs },
        {
          onMeasureStart() {
            before = cpuMark(groups(k));
            countsBefore = Promise.all(urls.map(answered));
          },
          onMeasureEnd(cpuS) {
            after = cpuMark(groups(k));
            loadGeneratorCpuS = cpuS;
          },
        },
      );
      const [b, a] = [await countsBefore!, await Promise.all(urls.map(answered))];
      rounds[i]!.push({
        load,
        cpu: cpuSpent(before!, after!, { loadGenerator: loadGeneratorCpuS }),
        byCoordinator: a.map((n, x) => n - b[x]!),
      });
    }
  await Promise.all(loadGenerators.map((g) => g.stop()));

  const cores = cpus().length;
  const points: CoordinatorPoint[] = [];
  const disturbed: string[] = [];
  for (const [i, k] of c.counts.entries()) {
    const measured = rounds[i]!;
    const load = poolRounds(measured.map((r) => r.load));
    const spent = measured.reduce<CpuSpent | undefined>((sum, r) => addSpent(sum, r.cpu), undefined)!;
    const fig = cpuFigures(spent, load.requests, 4);
    const coordinatorKeys = Array.from({ length: k }, (_, x) => `c${x + 1}`);
    const sum = (values: (number | null | undefined)[]): number | null =>
      values.some((v) => v === null || v === undefined) ? null : values.reduce<number>((a, b) => a + b!, 0);
    const us = (ms: number | null | undefined): number | null =>
      ms === null || ms === undefined ? null : round(ms * 1000, 1);
    const coordinatorsMs = sum(coordinatorKeys.map((key) => fig.cpuMsPerRequest[key]));
    const coresBusy = {
      coordinators: sum(coordinatorKeys.map((key) => fig.coresBusy[key])),
      busiestCoordinator:
        sum(coordinatorKeys.map((key) => fig.coresBusy[key])) === null
          ? null
          : Math.max(...coordinatorKeys.map((key) => fig.coresBusy[key]!)),
      idleCoordinators: fig.coresBusy.idleCoordinators ?? null,
      workers: fig.coresBusy.workers ?? null,
      loadGenerator: fig.coresBusy.loadGenerator ?? null,
      machine: fig.coresBusy.machine ?? null,
      outsideBench: fig.coresBusy.outsideBench ?? null,
    };
    if (coresBusy.coordinators !== null) coresBusy.coordinators = round(coresBusy.coordinators, 2);
    const cpuUsPerRequest = {
      coordinators: us(coordinatorsMs),
      idleCoordinators: us(fig.cpuMsPerRequest.idleCoordinators),
      workers: us(fig.cpuMsPerRequest.workers),
      loadGenerator: us(fig.cpuMsPerRequest.loadGenerator),
    };
    const share = (v: number | null): number | null => (v === null ? null : round(v / cores, 3));
    const accounted = [
      coresBusy.coordinators,
      coresBusy.idleCoordinators,
      coresBusy.workers,
      coresBusy.loadGenerator,
    ];
    const rest =
      coresBusy.machine === null || accounted.some((v) => v === null)
        ? null
        : Math.max(0, coresBusy.machine - accounted.reduce<number>((a, b) => a + b!, 0));
    const byCoordinator = Array.from({ length: k }, (_, x) =>
      measured.reduce((n, r) => n + r.byCoordinator[x]!, 0),
    );
    points.push({
      coordinators: k,
      concurrency: concurrencyFor(k),
      ...load,
      byCoordinator,
      rpsPerCoordinator: Math.round(load.rps / k),
      speedUp: null,
      cpuUsPerRequest,
      coresBusy,
      cpuShare: {
        coordinators: share(coresBusy.coordinators),
        idleCoordinators: share(coresBusy.idleCoordinators),
        workers: share(coresBusy.workers),
        loadGenerator: share(coresBusy.loadGenerator),
        rest: share(rest),
        idle: coresBusy.machine === null ? null : round(Math.max(0, 1 - coresBusy.machine / cores), 3),
      },
      rpsPerCoordinatorCore: capacityRps(1, cpuUsPerRequest.coordinators),
      cpuPerRequestVsOne: null,
      capacityRps: {
        coordinators: capacityRps(k, cpuUsPerRequest.coordinators),
        workers: capacityRps(c.workers, cpuUsPerRequest.workers),
        loadGenerator: capacityRps(c.loadGenerators, cpuUsPerRequest.loadGenerator),
      },
      boundBy: 'round trips',
      verdict: '',
    });
    noteDisturbance(disturbed, `${k} coordinators`, fig);
  }
  const ups = speedUps(points);
  const one = points.find((p) => p.coordinators === 1);
  for (const [i, p] of points.entries()) {
    p.speedUp = ups[i]!;
    const base = one?.cpuUsPerRequest.coordinators;
    p.cpuPerRequestVsOne =
      p.coordinators > 1 && base && p.cpuUsPerRequest.coordinators !== null
        ? round(p.cpuUsPerRequest.coordinators / base, 2)
        : null;
    Object.assign(
      p,
      verdictOf(p, {
        cores,
        workers: c.workers,
        loadGenerators: c.loadGenerators,
        saturationCores: s.saturationCores,
      }),
    );
  }
  const rss = rssMiB(fleet.coordinators[0]!.child.pid);
  await Promise.all([...fleet.coordinators, ...fleet.workers].map((x) => x.stop(5000)));
  return {
    workers: c.workers,
    loadGenerators: c.loadGenerators,
    model: `${MODEL}: sim latencyMs ${c.latencyMs}, maxBatchSize ${s.maxBatchSize}, batching on (maxQueueDelayMs ${s.maxQueueDelayMs}), FP32 [1,${SIM_ELEMENTS}] as ${s.encoding}`,
    cores,
    startS: fleet.startS,
    coordinatorRssMiB: rss === undefined ? null : round(rss, 1),
    points,
    statement:
      statementOf(points, cores) +
      (disturbed.length
        ? `; other work kept the cores busy during ${disturbed.join(', ')}: those figures are suspect`
        : ''),
    disturbed,
  };
}

/** The sweep in one sentence: the speed-ups, and what bounds them. */
export function statementOf(points: readonly CoordinatorPoint[], cores: number): string {
  if (points.length === 0) return 'no point measured';
  const ups = points
    .filter((p) => p.speedUp !== null && p.coordinators > 1)
    .map((p) => `${p.coordinators}: ${p.speedUp}×`)
    .join(', ');
  const last = points.at(-1)!;
  const head = ups
    ? `against one coordinator, ${ups} the throughput (${points.map((p) => `${cell(p.rps)}`).join(' / ')} req/s)`
    : `${cell(last.rps)} req/s with ${last.coordinators} coordinators`;
  const cpu = points.map((p) => cell(p.cpuUsPerRequest.coordinators, 0)).join(' / ');
  const machineBound = points.filter((p) => p.boundBy === 'machine CPU').length;
  const flat = points.every(
    (p) => p.cpuPerRequestVsOne === null || p.cpuPerRequestVsOne - 1 <= FLAT_CPU_RISE,
  );
  const tail =
    machineBound === points.length
      ? `every point is bound by the machine's ${cores} cores, which all the processes share; the coordinators' ` +
        `CPU per request (${cpu} µs) ${flat ? 'stays flat as coordinators are added: they share no bottleneck' : 'rises as coordinators are added'}`
      : `bound by ${points.map((p) => `${p.coordinators}: ${p.boundBy}`).join(', ')}; coordinators' CPU per request ${cpu} µs`;
  return `${head}; ${tail}`;
}

// ---- the page -------------------------------------------------------------------------------------

export function coordinatorSection(result: CoordinatorSweepResult): string[] {
  const pts = result.points;
  const f = (v: number | null) => pct(v);
  return [
    `K coordinators side by side over the same ${result.workers} \`sim\` workers (${result.model}), every worker`,
    `dialing every coordinator; the clients of ${result.loadGenerators === 1 ? 'one load generator' : `${result.loadGenerators} load generators`} spread round robin over the K coordinators' HTTP`,
    'ports; each point against one coordinator, in the same run.',
    '',
    ...table(
      [
        'coordinators',
        'clients',
        'req/s',
        'speed-up',
        'req/s per coordinator',
        'answered by each',
        'coordinator CPU µs/req',
        'req/s per coordinator core',
        'p50 / p99 ms',
        'CPU share: coordinators / workers / load gen / idle coordinators / rest / idle',
        'bound by',
      ],
      pts.map((p) => [
        cell(p.coordinators),
        cell(p.concurrency),
        cell(p.rps),
        p.speedUp === null ? '-' : `${p.speedUp}×`,
        cell(p.rpsPerCoordinator),
        p.byCoordinator.map((n) => cell(n)).join(' / '),
        cell(p.cpuUsPerRequest.coordinators, 1),
        cell(p.rpsPerCoordinatorCore),
        `${cell(p.latencyMs.p50, 1)} / ${cell(p.latencyMs.p99, 1)}`,
        [
          p.cpuShare.coordinators,
          p.cpuShare.workers,
          p.cpuShare.loadGenerator,
          p.cpuShare.idleCoordinators,
          p.cpuShare.rest,
          p.cpuShare.idle,
        ]
          .map(f)
          .join(' / '),
        p.boundBy,
      ]),
    ),
    `**In short:** ${result.statement}.`,
    '',
    ...pts.map((p) => `- ${p.coordinators} coordinator${p.coordinators === 1 ? '' : 's'}: ${p.verdict}.`),
    '',
    `CPU µs per request, every group: ${pts
      .map(
        (p) =>
          `${p.coordinators}: coordinators ${cell(p.cpuUsPerRequest.coordinators, 1)}, workers ${cell(p.cpuUsPerRequest.workers, 1)}, ` +
          `load generator ${cell(p.cpuUsPerRequest.loadGenerator, 1)}`,
      )
      .join(
        '; ',
      )}. Fleet started in ${cell(result.startS)} s; coordinator RSS ${cell(result.coordinatorRssMiB)} MiB.`,
    ...(result.disturbed.length
      ? ['', `Other work kept > 0.25 cores busy during: ${result.disturbed.join(', ')}.`]
      : []),
    '',
  ];
}

// ---- the target -----------------------------------------------------------------------------------

export function coordinatorTargets(result: CoordinatorSweepResult | undefined): TargetResult {
  const base = {
    id: 'scale-out-coordinators-x2',
    scenario: 'scale-out',
    goal: `scale-out: 2 coordinators ≥ ${TARGET_SPEED_UP}× one coordinator's throughput, where the cores allow it`,
  };
  const one = result?.points.find((p) => p.coordinators === 1);
  const two = result?.points.find((p) => p.coordinators === 2);
  if (!one || !two || two.speedUp === null)
    return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const figures =
    `${two.speedUp}× (${cell(two.rps)} vs ${cell(one.rps)} req/s); coordinators' CPU per request ` +
    `${cell(two.cpuUsPerRequest.coordinators, 0)} vs ${cell(one.cpuUsPerRequest.coordinators, 0)} µs`;
  const bound = `with 2 coordinators, ${two.verdict}`;
  if (two.speedUp >= TARGET_SPEED_UP) return { ...base, status: 'met', measured: figures, bound };
  if (two.boundBy === 'machine CPU')
    return {
      ...base,
      status: 'not measured',
      measured:
        `${NOT_MEASURED}: the machine's ${result!.cores} cores ran out first ` +
        `(${two.coresBusy.machine?.toFixed(2) ?? '-'} busy with 2 coordinators); ${figures}`,
      bound,
    };
  return { ...base, status: 'not met', measured: figures, bound };
}
