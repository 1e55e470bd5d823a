/**
 * How far one coordinator scales out: one coordinator in front of N `sim` workers with a
 * GPU-like cost (a batch costs latencyMs whatever its size, maxBatchSize 32, batching on with a
 * small maxQueueDelayMs), for N in 1, 2, 4 … 64, at a closed-loop concurrency that can fill every
 * worker's batches (N × maxBatchSize × concurrency-factor, capped by --max-concurrency).
 *
 *   npm run bench:scale-out -- --workers 1,2,4,8,16,32,64 --duration-s 8
 *   npm run bench:scale-out -- --quick
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
 * - The load generator is a child process (bench/lib/forked-load.ts with per-loop connections:
 *   bench/lib's closed loop, each client on its own connection, opened in waves before the
 *   warm-up and kept from point to point), so its CPU is its own and read exactly over the timed
 *   window; but on a small machine it still shares the cores with the coordinator and the
 *   workers. Every process group's CPU and the rest of the machine's are reported, so a point
 *   bound by the machine can be told from one bound by the coordinator.
 *
 * One JSON line per N on stdout, then a summary line; a table on stderr at the end.
 */

import { type CpuMark, cpuMark, cpuReport, type ProcessGroups } from './lib/cpu.ts';
import {
  DISTURBED_CORES,
  disturbedWarning,
  fmt,
  type ModelStats,
  modelStats,
  table,
  workerDelta,
} from './lib/report-table.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { encodeInferRequest } from '../src/client/index.ts';
import { adminWorkers, type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import {
  type LoadGenerator,
  round,
  sleep,
  startLoadGenerator,
  scratchDir,
  stopAll,
  track,
} from './lib/forked-load.ts';
import { benchParams, numberList, takeQuickFlag } from './lib/params.ts';
import { report } from './lib/results.ts';

const quick = takeQuickFlag();

const params = benchParams({
  /** Fleet sizes to measure, workers. */
  workers: '1,2,4,8,16,32,64',
  /** Timed seconds per point. */
  'duration-s': quick ? '3' : '8',
  /** Untimed seconds of the same load before every point. */
  'warmup-s': quick ? '0.5' : '1',
  /** Untimed seconds of load on the largest fleet once, after start-up: every worker warms its JIT. */
  'fleet-warmup-s': quick ? '1' : '2',
  /** Seconds with no load over which the fleet's idle CPU is read. */
  'idle-s': quick ? '1' : '2',
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
});
const fleetSizes = [...new Set(numberList(params.workers))].sort((a, b) => a - b);
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const fleetWarmupMs = Number(params['fleet-warmup-s']) * 1000;
const idleMs = Number(params['idle-s']) * 1000;
const latencyMs = Number(params['latency-ms']);
const maxBatchSize = Number(params['max-batch-size']);
const maxQueueDelayMs = Number(params['max-queue-delay-ms']);
const concurrencyFactor = Number(params['concurrency-factor']);
const maxConcurrency = Number(params['max-concurrency']);
const saturationRatio = Number(params['saturation-ratio']);
const saturationCores = Number(params['saturation-cores']);
{
  const problems: string[] = [];
  if (fleetSizes.length === 0 || fleetSizes.some((n) => !Number.isInteger(n)))
    problems.push('--workers must list positive integers');
  if (!(durationMs > 0)) problems.push('--duration-s must be > 0');
  if (!(warmupMs >= 0)) problems.push('--warmup-s must be >= 0');
  if (!(fleetWarmupMs >= 0)) problems.push('--fleet-warmup-s must be >= 0');
  if (!(idleMs > 0)) problems.push('--idle-s must be > 0');
  if (!(latencyMs > 0)) problems.push('--latency-ms must be > 0');
  if (!(Number.isInteger(maxBatchSize) && maxBatchSize >= 1))
    problems.push('--max-batch-size must be a positive integer');
  if (!(maxQueueDelayMs >= 0)) problems.push('--max-queue-delay-ms must be >= 0');
  if (!(concurrencyFactor > 0)) problems.push('--concurrency-factor must be > 0');
  if (!(Number.isInteger(maxConcurrency) && maxConcurrency >= 1))
    problems.push('--max-concurrency must be a positive integer');
  if (params.encoding !== 'json' && params.encoding !== 'binary')
    problems.push(`--encoding must be "json" or "binary", got "${params.encoding}"`);
  if (!(saturationRatio > 0 && saturationRatio <= 1)) problems.push('--saturation-ratio must be in (0, 1]');
  if (!(saturationCores > 0)) problems.push('--saturation-cores must be > 0');
  if (problems.length) throw new RangeError(problems.join('; '));
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

// ---- processes -------------------------------------------------------------------------------

function configYaml(largest: number): string {
  const spec = `[{ name: INPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]`;
  const outSpec = `[{ name: OUTPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]`;
  const models = fleetSizes.map(
    (n) => `  - name: ${modelName(n)}
    backend: sim
    sim: { latencyMs: ${latencyMs} }
    maxBatchSize: ${maxBatchSize}
    batching: { enabled: true, maxQueueDelayMs: ${maxQueueDelayMs} }
    workers: [${Array.from({ length: n }, (_, i) => workerId(i)).join(', ')}]
    inputs: ${spec}
    outputs: ${outSpec}
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
}

/** The coordinator and `count` workers, started together; resolves when every model is ready everywhere. */
async function startFleet(configFile: string, count: number): Promise<Fleet> {
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
        const wanted = fleetSizes.filter((n) => i < n).map(modelName);
        return w && wanted.every((m) => w.models.some((x) => x.name === m && x.state === 'ready'));
      });
    },
    FLEET_READY_TIMEOUT_MS,
  );
  return { url, coordinator, workers, startS: round((performance.now() - t0) / 1000, 1) };
}

// ---- CPU time and memory -------------------------------------------------------------------------

/** Resident memory of a process, MiB (Linux /proc/<pid>/status); undefined elsewhere. */
function rssMiB(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/** The fleet's process groups, for cpuMark. */
function fleetGroups(fleet: Fleet): ProcessGroups {
  return { coordinator: [fleet.coordinator.child.pid], workers: fleet.workers.map((w) => w.child.pid) };
}

// ---- the workers' statistics ---------------------------------------------------------------------

/** What the N workers did between two snapshots: batches and their mean size, queue wait, spread. */
function fleetDelta(before: ModelStats, after: ModelStats) {
  const { byWorker, ...delta } = workerDelta(before, after);
  const perWorker = Object.values(byWorker);
  /** Requests the least and the most loaded worker answered. */
  return { ...delta, perWorkerRequests: { min: Math.min(...perWorker), max: Math.max(...perWorker) } };
}

// ---- summary table ---------------------------------------------------------------------------------

// ---- the run ---------------------------------------------------------------------------------------

interface Point {
  workers: number;
  concurrency: number;
  rps: number;
  idealRps: number;
  ratio: number;
  meanBatchSize: number;
  coordinatorCores: number | null;
  workersCores: number | null;
  loadGeneratorCores: number | null;
  machineCores: number | null;
  outsideBenchCores: number | null;
  coordinatorCpuMsPerRequest: number | null;
  /** Requests one coordinator core would answer at this point's CPU time per request. */
  coordinatorRpsPerCore: number | null;
  saturated: boolean;
  saturatedBecause: string[];
}

/**
 * What held a saturated point back, from the CPU each group used. Above MACHINE_BUSY_SHARE of
 * its cores a machine's processes wait for a core often, so the round trips stretch with it.
 */
function boundBy(p: Point): string {
  const cores = cpus().length;
  const busy =
    `${fmt(p.machineCores)} of ${cores} cores busy: coordinator ${fmt(p.coordinatorCores)}, ` +
    `workers ${fmt(p.workersCores)}, load generator ${fmt(p.loadGeneratorCores)}`;
  if (p.coordinatorCores !== null && p.coordinatorCores >= saturationCores)
    return `coordinator CPU (${busy})`;
  if (p.machineCores !== null && p.machineCores >= MACHINE_BUSY_SHARE * cores) return `machine CPU (${busy})`;
  if (p.loadGeneratorCores !== null && p.loadGeneratorCores >= 0.9) return `load generator CPU (${busy})`;
  return `round trips (${busy})`;
}

function simRequest() {
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
  return {
    body: typeof request.body === 'string' ? Buffer.from(request.body) : request.body,
    headers: request.headers,
  };
}

const concurrencyFor = (n: number): number =>
  Math.min(maxConcurrency, Math.ceil(n * maxBatchSize * concurrencyFactor));

async function measurePoint(
  fleet: Fleet,
  loadGenerator: LoadGenerator,
  request: ReturnType<typeof simRequest>,
  n: number,
) {
  const model = modelName(n);
  const concurrency = concurrencyFor(n);
  const workersIdealRps = (n * maxBatchSize * 1000) / latencyMs;
  const clientsIdealRps = (concurrency * 1000) / latencyMs;
  const idealRps = Math.min(workersIdealRps, clientsIdealRps);
  let statsBefore: Promise<ModelStats> | undefined;
  let cpuBefore: CpuMark | undefined;
  let cpuAfter: CpuMark | undefined;
  let loadGeneratorCpuS = 0;
  const result = await loadGenerator.run(
    {
      url: `${fleet.url}/v2/models/${model}/infer`,
      ...request,
      concurrency,
      warmupMs,
      durationMs,
    },
    {
      onTimed() {
        cpuBefore = cpuMark(fleetGroups(fleet));
        statsBefore = modelStats(fleet.url, model);
      },
      onStopped(cpuS) {
        cpuAfter = cpuMark(fleetGroups(fleet));
        loadGeneratorCpuS = cpuS;
      },
    },
  );
  // the batches that answered the window's last requests are in the worker's figures too
  const worker = fleetDelta(await statsBefore!, await modelStats(fleet.url, model));
  // CPU over the window, per request started in it
  const cpu = cpuReport(cpuBefore!, cpuAfter!, result.requests, {
    reported: { loadGenerator: loadGeneratorCpuS },
    msDigits: 3,
  });
  const ratio = round(result.rps / idealRps);
  const coordinatorCpuMsPerRequest = cpu.cpuMsPerRequest.coordinator ?? null;
  const coordinatorCores = cpu.coresBusy.coordinator ?? null;
  const saturatedBecause = [
    ...(ratio < saturationRatio ? [`throughput ${ratio} of ideal < ${saturationRatio}`] : []),
    ...(coordinatorCores !== null && coordinatorCores >= saturationCores
      ? [`coordinator ${coordinatorCores} cores busy >= ${saturationCores}`]
      : []),
  ];
  const point: Point = {
    workers: n,
    concurrency,
    rps: result.rps,
    idealRps: round(idealRps, 0),
    ratio,
    meanBatchSize: worker.meanBatchSize,
    coordinatorCores,
    workersCores: cpu.coresBusy.workers ?? null,
    loadGeneratorCores: cpu.coresBusy.loadGenerator ?? null,
    machineCores: cpu.coresBusy.machine ?? null,
    outsideBenchCores: cpu.coresBusy.outsideBench ?? null,
    coordinatorCpuMsPerRequest,
    coordinatorRpsPerCore:
      coordinatorCpuMsPerRequest && coordinatorCpuMsPerRequest > 0
        ? round(1000 / coordinatorCpuMsPerRequest, 0)
        : null,
    saturated: saturatedBecause.length > 0,
    saturatedBecause,
  };
  const disturbed = point.outsideBenchCores !== null && point.outsideBenchCores > DISTURBED_CORES;
  report('scale-out', {
    scenario: 'point',
    params: { ...params, quick },
    placement: PLACEMENT,
    model,
    workers: n,
    concurrency,
    ...result,
    /** n × maxBatchSize / latency, capped by concurrency / latency. */
    idealRps: point.idealRps,
    idealBound: workersIdealRps <= clientsIdealRps ? 'workers' : 'concurrency',
    ratio,
    worker,
    ...cpu,
    coordinatorRpsPerCore: point.coordinatorRpsPerCore,
    saturated: point.saturated,
    ...(point.saturated ? { saturatedBecause, boundBy: boundBy(point) } : {}),
    ...(disturbed ? { disturbed: `other work kept ${point.outsideBenchCores} cores busy` } : {}),
  });
  return { point, result, disturbed };
}

function summaryStatement(points: Point[]): { first: Point | undefined; peak: Point; statement: string } {
  const first = points.find((p) => p.saturated);
  const peak = points.reduce((a, b) => (b.rps > a.rps ? b : a));
  const largest = points[points.length - 1]!.workers;
  const statement = first
    ? `one coordinator saturates at ${first.workers} workers (${first.concurrency} clients): ` +
      `${first.rps} req/s, ${first.ratio} of the ideal ${first.idealRps}, with the coordinator keeping ` +
      `${fmt(first.coordinatorCores)} cores busy at ${fmt(first.coordinatorCpuMsPerRequest, 3)} ms CPU per ` +
      `request; bound by ${boundBy(first)}. Limit: about ${first.coordinatorRpsPerCore ?? '-'} req/s per ` +
      `coordinator core (1000 / CPU ms per request there); peak ${peak.rps} req/s at ${peak.workers} workers`
    : `no point saturated: up to ${largest} workers every point reached ${saturationRatio} of ideal ` +
      `with the coordinator under ${saturationCores} cores (peak ${peak.rps} req/s at ${peak.workers} workers)`;
  return { first, peak, statement };
}

async function main(): Promise<void> {
  const dir = scratchDir();
  const largest = fleetSizes[fleetSizes.length - 1]!;
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, configYaml(largest));
  const points: Point[] = [];
  const rows: string[][] = [];
  const disturbed: string[] = [];
  try {
    const [fleet, loadGenerator] = await Promise.all([
      startFleet(configFile, largest),
      startLoadGenerator({
        connections: 'per-loop',
        rpsDigits: 0,
        readyTimeoutMs: LOAD_GENERATOR_READY_TIMEOUT_MS,
      }),
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
    const request = simRequest();

    // every worker runs its code once before anything is timed, then the fleet's idle cost
    if (fleetWarmupMs > 0)
      await loadGenerator.run(
        {
          url: `${fleet.url}/v2/models/${modelName(largest)}/infer`,
          ...request,
          concurrency: concurrencyFor(largest),
          warmupMs: 0,
          durationMs: fleetWarmupMs,
        },
        { onTimed() {}, onStopped() {} },
      );
    const idleBefore = cpuMark(fleetGroups(fleet));
    await sleep(idleMs);
    const idle = cpuReport(idleBefore, cpuMark(fleetGroups(fleet)), 0, {
      reported: { loadGenerator: 0 },
    }).coresBusy;
    const idleCores = { coordinator: idle.coordinator, workers: idle.workers, machine: idle.machine };

    for (const n of fleetSizes) {
      const { point, result, disturbed: isDisturbed } = await measurePoint(fleet, loadGenerator, request, n);
      points.push(point);
      if (isDisturbed) disturbed.push(`N=${n} (${point.outsideBenchCores})`);
      rows.push([
        String(n),
        String(point.concurrency),
        String(result.rps),
        String(point.idealRps),
        fmt(point.ratio),
        fmt(result.latencyMs.p50, 1),
        fmt(result.latencyMs.p99, 1),
        String(result.errors),
        fmt(point.meanBatchSize, 1),
        fmt(point.coordinatorCores),
        fmt(point.coordinatorCpuMsPerRequest, 3),
        fmt(point.workersCores),
        fmt(point.loadGeneratorCores),
        fmt(point.machineCores),
        fmt(point.outsideBenchCores),
        point.saturated ? 'yes' : '',
      ]);
    }
    await loadGenerator.stop();

    const { first, peak, statement } = summaryStatement(points);
    report('scale-out', {
      scenario: 'summary',
      params: { ...params, quick },
      placement: PLACEMENT,
      fleet: { workers: largest, startS: fleet.startS, ...memory, idleCores },
      sim: { latencyMs, perItemMs: 0, maxBatchSize, maxQueueDelayMs },
      tensor: `FP32 [1,${SIM_ELEMENTS}] as ${params.encoding}`,
      points: points.map(({ saturatedBecause: _, ...p }) => p),
      saturation: first ? { ...first, boundBy: boundBy(first) } : null,
      peak: { workers: peak.workers, rps: peak.rps, ratio: peak.ratio },
      /** 1000 / coordinator CPU ms per request at the first saturated point. */
      limitRpsPerCoordinatorCore: first?.coordinatorRpsPerCore ?? null,
      statement,
      ...(disturbed.length ? { disturbed } : {}),
    });
    console.error(
      `\nscale-out (${params['duration-s']} s per point; ideal = min(N x ${maxBatchSize}, clients) / ${latencyMs} ms; ` +
        'CPU in cores busy; other: busy outside the bench)',
    );
    console.error(
      table(
        [
          'workers',
          'clients',
          'rps',
          'ideal',
          'ratio',
          'p50 ms',
          'p99 ms',
          'errors',
          'batch',
          'coord',
          'coord ms/req',
          'workers',
          'loadgen',
          'machine',
          'other',
          'saturated',
        ],
        rows,
      ),
    );
    console.error(
      `idle with ${largest} workers: coordinator ${fmt(idleCores.coordinator)}, workers ${fmt(idleCores.workers)} cores`,
    );
    console.error(statement);
    if (disturbed.length) console.error(disturbedWarning(disturbed));
  } finally {
    await stopAll();
  }
}

await main();
