/**
 * How far infergrid scales out, in two sweeps run one after the other:
 *
 * 1. workers (`--workers`, this file): one coordinator in front of N `sim` workers, below;
 * 2. coordinators (`--coordinators 1,2,3`, scale-out-coordinators.ts): K coordinators side by
 *    side over the same `sim` workers, the load spread round robin over their HTTP ports, each K
 *    against one coordinator in the same run (issue 17). Its header says what it measures.
 *
 *   npm run bench:scale-out -- --coordinators 1,2,3 --workers none   only the coordinators sweep
 *   npm run bench:scale-out -- --workers 1,2,4 --coordinators none   only the workers sweep
 *   npm run bench -- scale-out                                       both, in the suite
 *
 * The workers sweep: one coordinator in front of N `sim` workers with a
 * GPU-like cost (a batch costs latencyMs whatever its size, maxBatchSize 32, batching on with a
 * small maxQueueDelayMs), for N in 1, 2, 4 … 64, at a closed-loop concurrency that can fill every
 * worker's batches (N × maxBatchSize × concurrency-factor, capped by --max-concurrency).
 *
 *   npm run bench:scale-out -- --workers 1,2,4,8,16,32,64 --duration-s 8
 *   npm run bench:scale-out -- --quick          both sweeps, shortened (the coordinators' ~20 s)
 *
 * Each point is held against its ideal: N × maxBatchSize / latencyMs (every worker always running
 * full batches), capped by what its clients can offer (concurrency / latencyMs: c clients keep at
 * most c rows in flight). The first point whose throughput falls under --saturation-ratio of
 * ideal, or whose coordinator keeps --saturation-cores busy, is where one coordinator saturates;
 * its CPU time per request gives the limit in requests per second per coordinator core.
 *
 * Trade-offs:
 * - Placement: the largest fleet's workers (w1 … wMax) are started once, in parallel, and reused
 *   for every point; each N has its own model `sim-n<N>` placed on w1 … wN only (`workers:` in
 *   the config). A worker's idle models cost nothing but a heartbeat, so the N-th point runs on N
 *   workers without restarting anyone. Every worker process costs memory (its RSS is reported)
 *   and start-up time (reported).
 * - The load generator is the load engine forked into a child process (bench/lib/load.ts, each
 *   client on its own connection, opened in waves before each point's warm-up), so its CPU is its
 *   own and read exactly over the timed window; but on a small machine it still shares the cores
 *   with the coordinator and the workers. Every process group's CPU and the rest of the machine's
 *   are reported, so a point bound by the machine can be told from one bound by the coordinator.
 */

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { encodeInferRequest } from '../../src/client/index.ts';
import { adminWorkers, type Spawned, spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import {
  type CpuFigures,
  type CpuMark,
  cpuFigures,
  cpuMark,
  cpuSpent,
  noteDisturbance,
  type ProcessGroups,
  rssMiB,
} from '../lib/cpu.ts';
import { type LoadFigures, type LoadSpec, startForkedLoad } from '../lib/load.ts';
import { type Charts, cell, noChart, pct, table, round } from '../lib/markdown.ts';
import { scratchDir, sleep, track } from '../lib/processes.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import { type ModelStats, modelStats, type WorkerDelta, workerDelta } from '../lib/stats.ts';
import { barChart, lineChart } from '../lib/svg.ts';
import {
  COORDINATOR_PARAMS,
  type CoordinatorSweepResult,
  coordinatorSection,
  coordinatorSettings,
  coordinatorTargets,
  runCoordinatorSweep,
} from './scale-out-coordinators.ts';

const PARAMS = {
  /** Fleet sizes to measure behind one coordinator, workers; `none` skips this sweep. */
  workers: '1,2,4,8,16,32,64',
  /** Timed seconds per point. */
  'duration-s': '8',
  /** Untimed seconds of the same load before every point. */
  'warmup-s': '1',
  /** Untimed seconds of load on the largest fleet once, after start-up: every worker warms its JIT. */
  'fleet-warmup-s': '2',
  /** Seconds with no load over which the fleet's idle CPU is read. */
  'idle-s': '2',
  /** The sim model's cost of one batch, whatever its size, ms. */
  'latency-ms': '20',
  'max-batch-size': '32',
  'max-queue-delay-ms': '2',
  /**
   * Clients per batch row the fleet can hold: concurrency = N × max-batch-size × this. At 1.2 the
   * clients still on their round trip leave the next batch short (measured: batches of 21 of 32,
   * 0.48 of ideal on one worker); at 2 a full batch waits while one runs.
   */
  'concurrency-factor': '2',
  /** Most clients the one load generator keeps in flight. */
  'max-concurrency': '1024',
  /** Request encoding: json or binary (raw tensor bytes both ways). */
  encoding: 'json',
  /** A point under this fraction of its ideal throughput is saturated. */
  'saturation-ratio': '0.9',
  /** A point whose coordinator keeps this many cores busy is saturated. */
  'saturation-cores': '0.85',
  /** The coordinators sweep (scale-out-coordinators.ts): K coordinators over the same workers. */
  ...COORDINATOR_PARAMS,
};
type ScaleOutParams = typeof PARAMS;

export interface ScaleOutPoint extends LoadFigures, CpuFigures<'coordinator' | 'workers' | 'loadGenerator'> {
  workers: number;
  concurrency: number;
  /** n × maxBatchSize / latency, capped by concurrency / latency. */
  idealRps: number;
  idealBound: 'workers' | 'concurrency';
  /** rps / idealRps. */
  ratio: number;
  /** What the N workers did in the window, and how evenly it was spread. */
  worker: Omit<WorkerDelta, 'byWorker'> & { perWorkerRequests: { min: number; max: number } };
  /** Requests one coordinator core would answer at this point's CPU time per request. */
  coordinatorRpsPerCore: number | null;
  saturated: boolean;
  saturatedBecause: string[];
  /** What held a saturated point back. */
  boundBy?: string;
}

export interface ScaleOutResult {
  params: ScaleOutParams;
  placement: string;
  /** Absent when the workers sweep was skipped (`--workers none`); `points` is then empty. */
  fleet?: {
    workers: number;
    startS: number;
    coordinatorRssMiB: number;
    workerRssMiBMean: number;
    workersRssMiBTotal: number;
    idleCores: { coordinator: number | null; workers: number | null; machine: number | null };
  };
  tensor: string;
  points: ScaleOutPoint[];
  /** 1000 / coordinator CPU ms per request at the first saturated point. */
  limitRpsPerCoordinatorCore: number | null;
  statement: string;
  disturbed: string[];
  /** The coordinators sweep; absent when skipped (`--coordinators none`) or in results from before it. */
  coordinators?: CoordinatorSweepResult;
}

const PLACEMENT =
  'the largest fleet is started once, in parallel, and reused: each N has its own model sim-n<N> ' +
  'placed on workers w1..wN only; the other workers idle';
const SIM_ELEMENTS = 16;
/** Starting many workers at once on few cores is slow: time allowed for the whole fleet, ms. */
const FLEET_READY_TIMEOUT_MS = 300_000;
const LOAD_GENERATOR_READY_TIMEOUT_MS = 60_000;
/** Share of the machine's cores busy above which a point counts as bound by the machine's CPU. */
const MACHINE_BUSY_SHARE = 0.75;

const modelName = (workers: number): string => `sim-n${workers}`;
const workerId = (i: number): string => `w${i + 1}`;

/** The scenario's numbers, checked together. */
function settings(params: ScaleOutParams) {
  const s = {
    fleetSizes:
      params.workers === 'none' ? [] : [...new Set(numberList(params.workers))].sort((a, b) => a - b),
    durationMs: Number(params['duration-s']) * 1000,
    warmupMs: Number(params['warmup-s']) * 1000,
    fleetWarmupMs: Number(params['fleet-warmup-s']) * 1000,
    idleMs: Number(params['idle-s']) * 1000,
    latencyMs: Number(params['latency-ms']),
    maxBatchSize: Number(params['max-batch-size']),
    maxQueueDelayMs: Number(params['max-queue-delay-ms']),
    concurrencyFactor: Number(params['concurrency-factor']),
    maxConcurrency: Number(params['max-concurrency']),
    saturationRatio: Number(params['saturation-ratio']),
    saturationCores: Number(params['saturation-cores']),
  };
  const { settings: coordinators, problems } = coordinatorSettings(params);
  if (
    params.workers !== 'none' &&
    (s.fleetSizes.length === 0 || s.fleetSizes.some((n) => !Number.isInteger(n)))
  )
    problems.push(`--workers must list positive integers or be "none", got "${params.workers}"`);
  if (s.fleetSizes.length === 0 && coordinators.counts.length === 0)
    problems.push('--workers none and --coordinators none leave nothing to measure');
  if (!(s.durationMs > 0)) problems.push('--duration-s must be > 0');
  if (!(s.warmupMs >= 0)) problems.push('--warmup-s must be >= 0');
  if (!(s.fleetWarmupMs >= 0)) problems.push('--fleet-warmup-s must be >= 0');
  if (!(s.idleMs > 0)) problems.push('--idle-s must be > 0');
  if (!(s.latencyMs > 0)) problems.push('--latency-ms must be > 0');
  if (!(Number.isInteger(s.maxBatchSize) && s.maxBatchSize >= 1))
    problems.push('--max-batch-size must be a positive integer');
  if (!(s.maxQueueDelayMs >= 0)) problems.push('--max-queue-delay-ms must be >= 0');
  if (!(s.concurrencyFactor > 0)) problems.push('--concurrency-factor must be > 0');
  if (!(Number.isInteger(s.maxConcurrency) && s.maxConcurrency >= 1))
    problems.push('--max-concurrency must be a positive integer');
  if (params.encoding !== 'json' && params.encoding !== 'binary')
    problems.push(`--encoding must be "json" or "binary", got "${params.encoding}"`);
  if (!(s.saturationRatio > 0 && s.saturationRatio <= 1))
    problems.push('--saturation-ratio must be in (0, 1]');
  if (!(s.saturationCores > 0)) problems.push('--saturation-cores must be > 0');
  if (problems.length) throw new RangeError(problems.join('; '));
  return { ...s, coordinators, encoding: params.encoding as 'json' | 'binary' };
}
type Settings = ReturnType<typeof settings>;

function configYaml(s: Settings, largest: number): string {
  const spec = (name: string) => `[{ name: ${name}, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]`;
  const models = s.fleetSizes.map(
    (n) => `  - name: ${modelName(n)}
    backend: sim
    sim: { latencyMs: ${s.latencyMs} }
    maxBatchSize: ${s.maxBatchSize}
    batching: { enabled: true, maxQueueDelayMs: ${s.maxQueueDelayMs} }
    workers: [${Array.from({ length: n }, (_, i) => workerId(i)).join(', ')}]
    inputs: ${spec('INPUT0')}
    outputs: ${spec('OUTPUT0')}
`,
  );
  return `# scale-out: ${largest} workers; model sim-n<N> on w1..wN
coordinator: { host: 127.0.0.1, port: 0, rpcPort: 0 }
logging: { level: warn }
models:
${models.join('')}`;
}

interface Fleet {
  url: string;
  coordinator: Spawned;
  workers: Spawned[];
  startS: number;
  groups: ProcessGroups;
}

/** The coordinator and `count` workers, started together; resolves when every model is ready everywhere. */
async function startFleet(s: Settings, configFile: string, count: number): Promise<Fleet> {
  const t0 = performance.now();
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
  const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
  const workers = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      spawnProcess(['worker', '--config', configFile, '--id', workerId(i), '--coordinator', rpc], {
        cleanup: track,
        readyTimeoutMs: FLEET_READY_TIMEOUT_MS,
      }),
    ),
  );
  const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  await waitFor(
    `${count} workers with their models ready`,
    async () => {
      const listed = await adminWorkers(url);
      return Array.from({ length: count }, (_, i) => i).every((i) => {
        const w = listed.find((x) => x.id === workerId(i));
        const wanted = s.fleetSizes.filter((n) => i < n).map(modelName);
        return w && wanted.every((m) => w.models.some((x) => x.name === m && x.state === 'ready'));
      });
    },
    FLEET_READY_TIMEOUT_MS,
  );
  return {
    url,
    coordinator,
    workers,
    startS: round((performance.now() - t0) / 1000, 1),
    groups: { coordinator: [coordinator.child.pid], workers: workers.map((w) => w.child.pid) },
  };
}

/**
 * What held a saturated point back, from the CPU each group used. Above MACHINE_BUSY_SHARE of
 * its cores a machine's processes wait for a core often, so the round trips stretch with it.
 */
function boundBy(
  p: CpuFigures<'coordinator' | 'workers' | 'loadGenerator'>,
  saturationCores: number,
): string {
  const cores = cpus().length;
  const busy = p.coresBusy;
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(2));
  const text =
    `${f(busy.machine)} of ${cores} cores busy: coordinator ${f(busy.coordinator)}, ` +
    `workers ${f(busy.workers)}, load generator ${f(busy.loadGenerator)}`;
  if (busy.coordinator !== null && busy.coordinator >= saturationCores) return `coordinator CPU (${text})`;
  if (busy.machine !== null && busy.machine >= MACHINE_BUSY_SHARE * cores) return `machine CPU (${text})`;
  if (busy.loadGenerator !== null && busy.loadGenerator >= 0.9) return `load generator CPU (${text})`;
  return `round trips (${text})`;
}

function statementOf(points: ScaleOutPoint[], s: Settings): string {
  const first = points.find((p) => p.saturated);
  const peak = points.reduce((a, b) => (b.rps > a.rps ? b : a));
  if (!first)
    return (
      `no point saturated: up to ${points.at(-1)!.workers} workers every point reached ${s.saturationRatio} of ideal ` +
      `with the coordinator under ${s.saturationCores} cores (peak ${peak.rps} req/s at ${peak.workers} workers)`
    );
  const ms = first.cpuMsPerRequest.coordinator;
  return (
    `one coordinator saturates at ${first.workers} workers (${first.concurrency} clients): ` +
    `${first.rps} req/s, ${first.ratio} of the ideal ${first.idealRps}, with the coordinator keeping ` +
    `${first.coresBusy.coordinator?.toFixed(2) ?? '-'} cores busy at ${ms?.toFixed(3) ?? '-'} ms CPU per ` +
    `request; bound by ${first.boundBy}. Limit: about ${first.coordinatorRpsPerCore ?? '-'} req/s per ` +
    `coordinator core (1000 / CPU ms per request there); peak ${peak.rps} req/s at ${peak.workers} workers`
  );
}

async function run(params: ScaleOutParams): Promise<ScaleOutResult> {
  const s = settings(params);
  const workerSweep: Omit<ScaleOutResult, 'coordinators'> =
    s.fleetSizes.length > 0
      ? await runWorkerSweep(params, s)
      : {
          params,
          placement: PLACEMENT,
          tensor: `FP32 [1,${SIM_ELEMENTS}] as ${params.encoding}`,
          points: [],
          limitRpsPerCoordinatorCore: null,
          statement: 'not measured (--workers none)',
          disturbed: [],
        };
  const coordinators =
    s.coordinators.counts.length > 0 ? await runCoordinatorSweep(s.coordinators, s) : undefined;
  return { ...workerSweep, ...(coordinators ? { coordinators } : {}) };
}

/** One coordinator over 1, 2, 4 ... workers; its processes are stopped before it returns. */
async function runWorkerSweep(
  params: ScaleOutParams,
  s: Settings,
): Promise<Omit<ScaleOutResult, 'coordinators'>> {
  const largest = s.fleetSizes.at(-1)!;
  const configFile = join(scratchDir(), 'config.yaml');
  writeFileSync(configFile, configYaml(s, largest));
  const [fleet, loadGenerator] = await Promise.all([
    startFleet(s, configFile, largest),
    startForkedLoad({ readyTimeoutMs: LOAD_GENERATOR_READY_TIMEOUT_MS, rpsDigits: 0 }),
  ]);
  const rss = fleet.workers.map((w) => rssMiB(w.child.pid) ?? Number.NaN);
  const rssTotal = rss.reduce((a, b) => a + b, 0);
  const memory = {
    coordinatorRssMiB: round(rssMiB(fleet.coordinator.child.pid) ?? Number.NaN, 1),
    workerRssMiBMean: round(rssTotal / rss.length, 1),
    workersRssMiBTotal: round(rssTotal, 0),
  };
  console.error(
    `scale-out: ${largest} workers and the coordinator ready in ${fleet.startS} s; ` +
      `worker RSS ${memory.workerRssMiBMean} MiB each, ${memory.workersRssMiBTotal} MiB in all`,
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
    { binary: params.encoding === 'binary' },
  );
  const body = { body: Buffer.from(request.body), headers: request.headers };
  const concurrencyFor = (n: number): number =>
    Math.min(s.maxConcurrency, Math.ceil(n * s.maxBatchSize * s.concurrencyFactor));
  const spec = (n: number): LoadSpec => ({
    url: `${fleet.url}/v2/models/${modelName(n)}/infer`,
    bodies: [body],
    concurrency: concurrencyFor(n),
    connections: 'per-loop',
  });

  // every worker runs its code once before anything is timed, then the fleet's idle cost
  if (s.fleetWarmupMs > 0)
    await loadGenerator.run(
      spec(largest),
      { durationMs: s.fleetWarmupMs },
      { onMeasureStart() {}, onMeasureEnd() {} },
    );
  const idleBefore = cpuMark(fleet.groups);
  await sleep(s.idleMs);
  const idle = cpuFigures<'coordinator' | 'workers'>(
    cpuSpent(idleBefore, cpuMark(fleet.groups)),
    0,
  ).coresBusy;

  const points: ScaleOutPoint[] = [];
  const disturbed: string[] = [];
  for (const n of s.fleetSizes) {
    const model = modelName(n);
    const concurrency = concurrencyFor(n);
    const workersIdealRps = (n * s.maxBatchSize * 1000) / s.latencyMs;
    const clientsIdealRps = (concurrency * 1000) / s.latencyMs;
    const idealRps = Math.min(workersIdealRps, clientsIdealRps);
    let statsBefore: Promise<ModelStats> | undefined;
    let cpuBefore: CpuMark | undefined;
    let cpuAfter: CpuMark | undefined;
    let loadGeneratorCpuS = 0;
    const load = await loadGenerator.run(
      spec(n),
      { durationMs: s.durationMs, warmupMs: s.warmupMs },
      {
        onMeasureStart() {
          cpuBefore = cpuMark(fleet.groups);
          statsBefore = modelStats(fleet.url, model);
        },
        onMeasureEnd(cpuS) {
          cpuAfter = cpuMark(fleet.groups);
          loadGeneratorCpuS = cpuS;
        },
      },
    );
    // the batches that answered the window's last requests are in the worker's figures too
    const { byWorker, ...delta } = workerDelta(await statsBefore!, await modelStats(fleet.url, model));
    const perWorker = Object.values(byWorker);
    // CPU over the window, per request started in it
    const cpu = cpuFigures<'coordinator' | 'workers' | 'loadGenerator'>(
      cpuSpent(cpuBefore!, cpuAfter!, { loadGenerator: loadGeneratorCpuS }),
      load.requests,
      3,
    );
    const ratio = round(load.rps / idealRps);
    const coordinatorCores = cpu.coresBusy.coordinator;
    const coordinatorMs = cpu.cpuMsPerRequest.coordinator;
    const saturatedBecause = [
      ...(ratio < s.saturationRatio ? [`throughput ${ratio} of ideal < ${s.saturationRatio}`] : []),
      ...(coordinatorCores !== null && coordinatorCores >= s.saturationCores
        ? [`coordinator ${coordinatorCores} cores busy >= ${s.saturationCores}`]
        : []),
    ];
    points.push({
      workers: n,
      concurrency,
      ...load,
      idealRps: round(idealRps, 0),
      idealBound: workersIdealRps <= clientsIdealRps ? 'workers' : 'concurrency',
      ratio,
      worker: {
        ...delta,
        perWorkerRequests: { min: Math.min(...perWorker), max: Math.max(...perWorker) },
      },
      ...cpu,
      coordinatorRpsPerCore: coordinatorMs && coordinatorMs > 0 ? round(1000 / coordinatorMs, 0) : null,
      saturated: saturatedBecause.length > 0,
      saturatedBecause,
      ...(saturatedBecause.length > 0 ? { boundBy: boundBy(cpu, s.saturationCores) } : {}),
    });
    noteDisturbance(disturbed, `N=${n}`, cpu);
  }
  await loadGenerator.stop();
  // the coordinators sweep runs next on the same cores: nothing of this fleet may idle beside it
  await Promise.all([fleet.coordinator, ...fleet.workers].map((x) => x.stop(5000)));
  const first = points.find((p) => p.saturated);
  return {
    params,
    placement: PLACEMENT,
    fleet: {
      workers: largest,
      startS: fleet.startS,
      ...memory,
      idleCores: { coordinator: idle.coordinator, workers: idle.workers, machine: idle.machine },
    },
    tensor: `FP32 [1,${SIM_ELEMENTS}] as ${params.encoding}`,
    points,
    limitRpsPerCoordinatorCore: first?.coordinatorRpsPerCore ?? null,
    statement: statementOf(points, s),
    disturbed,
  };
}

// ---- the page -------------------------------------------------------------------------------------

function section(result: ScaleOutResult, charts: Charts): string[] {
  const coordinators = result.coordinators
    ? ['### Several coordinators over the same workers', '', ...coordinatorSection(result.coordinators)]
    : [];
  const { fleet } = result;
  if (result.points.length === 0 || !fleet)
    return [
      'One coordinator in front of N workers: not measured in this run (`--workers none`).',
      '',
      ...coordinators,
    ];
  return [...workersSection(result, fleet, charts), ...coordinators];
}

function workersSection(
  result: ScaleOutResult,
  fleet: NonNullable<ScaleOutResult['fleet']>,
  charts: Charts,
): string[] {
  const pts = result.points;
  const cpu = pts.filter((p) => p.cpuMsPerRequest.coordinator !== null);
  return [
    'One coordinator in front of N `sim` workers with a GPU-like cost, each point at a concurrency that',
    "can fill every worker's batches, held against its ideal (every worker always running full batches).",
    '',
    ...table(
      [
        'workers',
        'clients',
        'req/s',
        'ideal req/s',
        'of ideal',
        'p50 ms',
        'p99 ms',
        'mean batch',
        'coordinator cores',
        'coordinator CPU ms/req',
        'machine cores',
        'saturated',
      ],
      pts.map((p) => [
        cell(p.workers),
        cell(p.concurrency),
        cell(p.rps),
        cell(p.idealRps),
        pct(p.ratio),
        cell(p.latencyMs.p50, 1),
        cell(p.latencyMs.p99, 1),
        cell(p.worker.meanBatchSize, 1),
        cell(p.coresBusy.coordinator),
        cell(p.cpuMsPerRequest.coordinator, 3),
        cell(p.coresBusy.machine),
        p.saturated ? `yes${p.boundBy ? `: ${p.boundBy}` : ''}` : 'no',
      ]),
    ),
    `**In short:** ${result.statement}.`,
    '',
    `Fleet: ${cell(fleet.workers)} workers started in ${cell(fleet.startS)} s; worker RSS ` +
      `${cell(fleet.workerRssMiBMean)} MiB each, coordinator ${cell(fleet.coordinatorRssMiB)} MiB.`,
    '',
    charts.add(
      'scale-out-throughput',
      lineChart({
        title: 'Scale-out: throughput vs workers',
        xLabel: 'workers behind one coordinator',
        yLabel: 'requests / s',
        xScale: 'linear',
        series: [
          { name: 'measured', points: pts.map((p) => ({ x: p.workers, y: p.rps })) },
          { name: 'ideal', dashed: true, points: pts.map((p) => ({ x: p.workers, y: p.idealRps })) },
        ],
      }),
      'Scale-out: throughput against the ideal line',
    ),
    '',
    cpu.length
      ? charts.add(
          'scale-out-coordinator-cpu',
          barChart({
            title: 'Scale-out: coordinator CPU per request',
            valueLabel: 'coordinator CPU ms per request',
            categories: cpu.map((p) => `${p.workers} workers`),
            series: [{ name: 'coordinator', values: cpu.map((p) => p.cpuMsPerRequest.coordinator) }],
          }),
          'Scale-out: coordinator CPU time per request',
        )
      : noChart('coordinator CPU', 'the results carry no coordinator CPU time per request'),
    '',
    `A point counts as at the coordinator's limit when its coordinator keeps ≥ ${result.params['saturation-cores']} cores busy.`,
    '',
  ];
}

// ---- the target -----------------------------------------------------------------------------------

/** The workers sweep's target, then the coordinators sweep's. */
function targets(result: ScaleOutResult | undefined, cpuCount: number): TargetResult[] {
  return [...workersTargets(result, cpuCount), coordinatorTargets(result?.coordinators)];
}

function workersTargets(result: ScaleOutResult | undefined, cpuCount: number): TargetResult[] {
  const base = {
    id: 'scale-out-vs-ideal',
    scenario: 'scale-out',
    goal: "scale-out: throughput ≥ 90% of ideal up to the coordinator's limit",
  };
  const points = result?.points ?? [];
  if (!result || points.length === 0) return [{ ...base, status: 'not measured', measured: NOT_MEASURED }];
  // the limit: the first fleet whose CPU ran out — the coordinator's share of a core, or the
  // machine's cores shared by every process (which, on a small machine, run out first). A fleet
  // under its share of ideal for any other reason (round trips, the load generator) is judged.
  const limitCores = Number(result.params['saturation-cores']);
  const coordinatorOut = (p: ScaleOutPoint) =>
    p.coresBusy.coordinator !== null && p.coresBusy.coordinator >= limitCores;
  const limit = points.find(
    (p) =>
      coordinatorOut(p) ||
      /^(coordinator|machine) CPU/.test(p.boundBy ?? '') ||
      (p.boundBy === undefined &&
        p.coresBusy.machine !== null &&
        p.coresBusy.machine >= MACHINE_BUSY_SHARE * cpuCount),
  );
  const below = limit ? points.filter((p) => p.workers < limit.workers) : points;
  const perCore = limit?.coordinatorRpsPerCore ?? points.at(-1)!.coordinatorRpsPerCore;
  const perCoreText =
    perCore === null
      ? ''
      : `; one coordinator core answers about ${cell(perCore)} req/s (1000 / its ${cell(1000 / perCore, 3)} ms ` +
        `of CPU per request${limit ? ` at ${limit.workers} workers` : ''})`;
  const coordinatorFirst = limit !== undefined && coordinatorOut(limit);
  const limitText = limit
    ? `the limit is reached at ${limit.workers} workers: ${cell(limit.rps)} of ${cell(limit.idealRps)} req/s ` +
      `(${pct(limit.ratio)}), bound by ${limit.boundBy ?? `${coordinatorFirst ? 'the coordinator' : 'the machine'} (${cell(limit.coresBusy.coordinator)} coordinator cores busy)`}` +
      (coordinatorFirst ? '' : ": the machine's cores ran out before the coordinator's")
    : `no fleet up to ${points.at(-1)!.workers} workers ran out of CPU`;
  if (below.length === 0)
    return [
      {
        ...base,
        status: 'not measured',
        measured: `${NOT_MEASURED}: ${limitText}, the smallest fleet measured${perCoreText}`,
      },
    ];
  const worst = below.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  const range = below.length === 1 ? `${below[0]!.workers}` : `${below[0]!.workers}–${below.at(-1)!.workers}`;
  return [
    {
      ...base,
      status: worst.ratio >= 0.9 ? 'met' : 'not met',
      measured:
        `${pct(worst.ratio)} of ideal at worst over ${range} workers (${worst.workers}: ${cell(worst.rps)} of ` +
        `${cell(worst.idealRps)} req/s); ${limitText}${perCoreText}`,
      ...(limit?.boundBy ? { bound: `at ${limit.workers} workers, ${limit.boundBy}` } : {}),
    },
  ];
}

export const scaleOut: Scenario<ScaleOutResult, ScaleOutParams> = {
  name: 'scale-out',
  title: 'Scale-out: one coordinator over N workers, and K coordinators over the same workers',
  params: PARAMS,
  // the largest fleets take minutes to start on a small machine
  quick: {
    workers: '1,2,4,8',
    'duration-s': '3',
    'warmup-s': '0.5',
    'fleet-warmup-s': '1',
    'idle-s': '1',
    'coordinator-rounds': '1',
  },
  run,
  section,
  targets,
};

await runIfMain(import.meta.url, scaleOut);
