/**
 * What a pipeline costs, on real processes (one coordinator, its workers, this load generator):
 *
 * - `ocr-line`: the demo's pipeline (examples/demo-config.yaml: image BYTES -> preprocess ->
 *   classifier -> prepare -> recognizer -> decode -> text), fed 16 rendered text lines in turn,
 *   at several closed-loop concurrencies, in two topologies:
 *   `disaggregated` (the demo's: the js processors on their own pool process `pre-1`, the ONNX
 *   models on w1 and w2) and `colocated` (the same processors hosted by w1 and w2, no pool, so
 *   the same two model workers and one process fewer), and `colocated, run on worker` (the
 *   colocated placement with `pipeline.runOn: worker`: each model worker runs the whole pipeline
 *   against its own models, no tensor crossing the coordinator between steps). The response cache is off for every
 *   model, so every request runs every step. Each line carries the engine's per-step queue wait
 *   and run time (GET /v2/models/stats, summed over workers) and the CPU time of each process
 *   group, read from /proc around each timed slice.
 *   Against it, the same steps with no engine (bench/lib/ocr-line-baseline.ts): the same step
 *   functions and the same two ONNX models (onnxruntime-node sessions, intraOpNumThreads 1 like
 *   the workers') in plain processes, each reading whole lines one at a time, driven by the same
 *   load engine at the same concurrencies over the same 16 lines, after checking it reads every
 *   line as each topology does. It gets as many processes as the topologies have model workers
 *   (two): the engine runs onnxruntime in two processes, up to two cores at once, so one process
 *   would measure the engine against half its cores. The baseline and every topology are up at
 *   once and, at each concurrency, take turns in slices of about 2 s (OCR_SLICE_MS), so drift over
 *   the run (another job on a shared machine) falls on all alike; the others waiting meanwhile
 *   stay idle. Each engine point carries its throughput and latency against the baseline's at the
 *   same concurrency; the target compares each at its best measured concurrency (ocrVsBaseline).
 * - `hop`: the coordinator's hop per step. `sim` models with no latency echo their input (an
 *   identity), so a pipeline of N such steps costs N coordinator -> worker -> coordinator round
 *   trips of the tensor. A direct request to the sim model is timed against pipelines of N steps
 *   for each tensor size, in binary tensor data both ways (no JSON numbers), on one worker, and
 *   so are the same pipelines with `runOn: worker` (`ident-xN-worker`: one RPC round trip per
 *   request, the steps chained inside the worker). The
 *   targets take turns in 0.5 s slices, so drift during the run falls on all of them alike.
 *   Reported: p50 added per step against the direct request, the marginal cost of one more step
 *   (between the shortest and longest pipeline) in latency and in coordinator CPU, its growth
 *   per MiB of tensor, and what a direct worker-to-worker path would save (the second transfer
 *   of each intermediate tensor).
 *
 *   npm run bench:pipeline -- --duration-s 10 --concurrency 1,8,32 --scenarios ocr-line,hop
 *
 * Trade-off: the load generator (the load engine, bench/lib/load.ts) runs in this process, so
 * it shares the machine's cores with the engine; its CPU time is reported next to the engine's,
 * and so is the CPU the rest of the machine used meanwhile (`coresBusy.outsideBench`): on a small
 * shared machine another job can skew a run.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { HttpBody, RunResult } from '../../src/cli/bench/index.ts';
import { decodeInferResponse, encodeInferRequest } from '../../src/client/index.ts';
import { adminWorkers, type Spawned, spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import { renderTextLine } from '../../tests/fixtures/render-text.ts';
import {
  addSpent,
  type CpuFigures,
  type CpuSpent,
  cpuFigures,
  cpuMark,
  cpuSpent,
  DISTURBED_CORES,
  noteDisturbance,
  type ProcessGroups,
} from '../lib/cpu.ts';
import { figures, type LoadFigures, openLoad, runClosedLoop } from '../lib/load.ts';
import { bytesText, type Charts, cell, pct, table, round } from '../lib/markdown.ts';
import { startOcrBaseline } from '../lib/ocr-line-baseline.ts';
import { scratchDir, track } from '../lib/processes.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import type { CountNs } from '../lib/stats.ts';
import { barChart, lineChart } from '../lib/svg.ts';

const PARAMS = {
  /** Which scenarios to run: ocr-line, hop, or both. */
  scenarios: 'ocr-line,hop',
  /** Timed seconds per ocr-line point (topology × concurrency). */
  'duration-s': '10',
  /** Untimed seconds before every point, of either scenario. */
  'warmup-s': '1',
  concurrency: '1,8,32',
  /** Timed seconds per hop point (tensor size × concurrency × target), in 0.5 s slices taking turns. */
  'hop-duration-s': '5',
  'hop-concurrency': '1,8',
  /** FP32 tensor sizes for the hop scenario, bytes (multiples of 4). */
  'hop-bytes': '4096,1048576',
  /** Pipeline lengths for the hop scenario, steps. */
  'hop-steps': '2,4',
};
type PipelineParams = typeof PARAMS;

/** What the workers did for one model in a timed run: calls, queue wait, run time, where. */
export interface StepDelta {
  calls: number;
  failed: number;
  /** Per call: time queued on the worker, and time in the model. */
  queueMsMean: number;
  computeMsMean: number;
  byWorker: Record<string, number>;
}

export interface OcrPoint
  extends LoadFigures,
    CpuFigures<'coordinator' | 'modelWorkers' | 'pool' | 'loadGenerator'> {
  topology: Topology;
  concurrency: number;
  workers: string[];
  /** `16/16`: lines the pipeline read exactly. */
  linesReadExactly: string;
  misread: { expected: string; read: string }[];
  steps: Record<string, StepDelta>;
  vsDisaggregated?: Ratios;
  /** Against the same steps in one process at the same concurrency (engine / baseline). */
  vsBaseline?: Ratios;
}

/** One figure over another: requests per second, p50, p99. */
export interface Ratios {
  throughput: number;
  p50: number;
  p99: number;
}

/** The same steps with no engine at one concurrency: the baseline processes and this load generator. */
export interface OcrBaselinePoint extends LoadFigures, CpuFigures<'baseline' | 'loadGenerator'> {
  concurrency: number;
}

export interface OcrBaseline {
  /** Plain processes, each with its own two sessions, reading whole lines: one per model worker. */
  processes: number;
  /** The machine's cores when it ran. */
  cores: number;
  linesReadExactly: string;
  misread: { expected: string; read: string }[];
  /** Lines a topology read otherwise than the baseline: none, or the two are not comparable. */
  differsFromEngine: { topology: Topology; line: number; engine: string; baseline: string }[];
  points: OcrBaselinePoint[];
}

export interface HopTargetRun extends LoadFigures, CpuFigures<'coordinator' | 'worker' | 'loadGenerator'> {
  workerCallsPerRequest: number;
}

export interface HopPoint {
  tensor: string;
  bytes: number;
  concurrency: number;
  /** By target: the identity model called directly, and each pipeline of it. */
  runs: Record<string, HopTargetRun>;
  p50Ms: Record<string, number>;
  /** (p50 of the N-step pipeline - p50 of the direct request) / N, by pipeline. */
  addedMsPerStep: Record<string, number>;
  /** p50 cost of one more step: (p50 of the longest - p50 of the shortest pipeline) / (steps apart). */
  marginalMsPerStep?: number;
  coordinatorCpuMsPerStep?: number;
}

/** Per concurrency: how a step's cost grows with the tensor, and what a direct worker-to-worker path would save. */
export interface HopSummary {
  concurrency: number;
  marginalMsPerStep: Record<string, number>;
  msPerMiBPerStep: number;
  coordinatorCpuMsPerMiBPerStep: number | null;
  directWorkerToWorker: {
    pipeline: string;
    bytes: number;
    savedTransferBytes: number;
    /** Half of the intermediate tensors' byte cost: one of their two crossings. An estimate. */
    estimatedSavedP50Ms: number;
    /** All of the coordinator's byte work on the intermediate tensors. An estimate. */
    estimatedSavedCoordinatorCpuMs: number | null;
  };
}

export interface PipelineResult {
  params: PipelineParams;
  ocr: OcrPoint[];
  /** Absent in results from before it was measured. */
  ocrBaseline?: OcrBaseline;
  hop: HopPoint[];
  hopSummary: HopSummary[];
  /** Points during which other work kept the cores busy. */
  disturbed: string[];
}

const DEMO_CONFIG = fileURLToPath(new URL('../../examples/demo-config.yaml', import.meta.url));
const OCR_PIPELINE = 'ocr-line';
/** Varied lengths and characters; every 8th is rendered upside down, for the classifier and prepare. */
const OCR_LINES = [
  'Total 1284.50 EUR',
  'Invoice No. 2024-0117',
  'Due date 15/03/2025',
  'VAT 20% 214.08',
  'Thank you for your order',
  'Qty 3 x 12.99',
  'Subtotal 1070.42',
  'Order A7781-XZ',
  'Delivery Monday 9am',
  'Card ending 4821',
  'Paid in full',
  'Reference 55-0931-7',
  'Discount -15.00',
  'Shipping 4.95',
  'Customer ID 88120',
  'Page 2 of 3',
];
const UPSIDE_DOWN_EVERY = 8;
const HOP_MODEL = 'ident';
const READY_TIMEOUT_MS = 120_000;
/** About the length of one ocr-line slice (a few of the slowest requests' latency); targets take turns, ms. */
const OCR_SLICE_MS = 2000;
/** Length of one hop slice; targets take turns slice by slice, ms. */
const HOP_SLICE_MS = 500;
const MIB = 1024 * 1024;

/** The scenario's numbers, checked together. */
function settings(params: PipelineParams) {
  const s = {
    scenarios: new Set(params.scenarios.split(',').map((x) => x.trim())),
    durationMs: Number(params['duration-s']) * 1000,
    warmupMs: Number(params['warmup-s']) * 1000,
    hopDurationMs: Number(params['hop-duration-s']) * 1000,
    concurrencies: numberList(params.concurrency),
    hopConcurrencies: numberList(params['hop-concurrency']),
    hopBytes: numberList(params['hop-bytes']),
    hopSteps: numberList(params['hop-steps']).sort((a, b) => a - b),
  };
  const problems: string[] = [];
  const unknown = [...s.scenarios].filter((x) => x !== 'ocr-line' && x !== 'hop');
  if (unknown.length) problems.push(`--scenarios: unknown ${unknown.join(', ')} (ocr-line, hop)`);
  if (!(s.durationMs > 0)) problems.push('--duration-s must be > 0');
  if (!(s.hopDurationMs > 0)) problems.push('--hop-duration-s must be > 0');
  if (!(s.warmupMs >= 0)) problems.push('--warmup-s must be >= 0');
  if (s.concurrencies.length === 0) problems.push('--concurrency must list positive integers');
  if (s.hopConcurrencies.length === 0) problems.push('--hop-concurrency must list positive integers');
  if (s.hopBytes.length === 0 || s.hopBytes.some((b) => !Number.isInteger(b) || b % 4 !== 0))
    problems.push('--hop-bytes must list positive multiples of 4 (FP32 elements)');
  if (s.hopSteps.length === 0 || s.hopSteps.some((n) => !Number.isInteger(n) || n < 2))
    problems.push('--hop-steps must list integers >= 2');
  if (problems.length) throw new RangeError(problems.join('; '));
  return s;
}
type Settings = ReturnType<typeof settings>;

const httpBody = (request: ReturnType<typeof encodeInferRequest>): HttpBody => ({
  body: Buffer.from(request.body),
  headers: request.headers,
});

/** One request through fetch, decoded; throws on an error status. */
async function inferOnce(url: string, request: HttpBody) {
  const res = await fetch(url, { method: 'POST', ...request });
  const body = Buffer.from(await res.arrayBuffer());
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${body.toString('utf8').slice(0, 500)}`);
  return {
    response: decodeInferResponse(body, res.headers.get('inference-header-content-length'), res.status),
    cache: res.headers.get('infergrid-cache'),
  };
}

// ---- processes ----------------------------------------------------------------------------------

interface Fleet {
  url: string;
  coordinator: Spawned;
  workers: Map<string, Spawned>;
  stop(): Promise<void>;
}

/**
 * A coordinator and the given workers, dialing it; resolves once every worker has its models
 * (`placement`: worker id -> model names) ready.
 */
async function startFleet(configFile: string, placement: Map<string, string[]>): Promise<Fleet> {
  const started: Spawned[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(started.map((s) => s.stop(2000)));
  };
  try {
    const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
    started.push(coordinator);
    const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
    const workers = new Map<string, Spawned>();
    await Promise.all(
      [...placement.keys()].map(async (id) => {
        const w = await spawnProcess(['worker', '--config', configFile, '--id', id, '--coordinator', rpc], {
          cleanup: track,
        });
        started.push(w);
        workers.set(id, w);
      }),
    );
    const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
    await waitFor(
      `workers ${[...placement.keys()].join(', ')} with their models ready`,
      async () => {
        const listed = await adminWorkers(url);
        return [...placement].every(([id, models]) => {
          const w = listed.find((x) => x.id === id);
          return w && models.every((m) => w.models.some((x) => x.name === m && x.state === 'ready'));
        });
      },
      READY_TIMEOUT_MS,
    );
    return { url, coordinator, workers, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ---- the workers' statistics ---------------------------------------------------------------------

interface ModelStats {
  name: string;
  inference_count: number;
  execution_count: number;
  inference_stats: { fail: CountNs; queue: CountNs; compute_infer: CountNs };
  infergrid: { workers: { id: string; inference_count: number }[] };
}

async function allStats(url: string): Promise<Map<string, ModelStats>> {
  const res = await fetch(`${url}/v2/models/stats`);
  if (!res.ok) throw new Error(`GET /v2/models/stats: HTTP ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { model_stats: ModelStats[] };
  return new Map(body.model_stats.map((s) => [s.name, s]));
}

/** What the workers did for one model between two snapshots: calls, queue wait, run time, where. */
function modelDelta(before: ModelStats | undefined, after: ModelStats) {
  const zero: CountNs = { count: 0, ns: 0 };
  const perCallMs = (b: CountNs | undefined, a: CountNs): number => {
    const calls = a.count - (b?.count ?? 0);
    return calls === 0 ? 0 : round((a.ns - (b?.ns ?? 0)) / calls / 1e6);
  };
  const byWorker: Record<string, number> = {};
  for (const w of after.infergrid.workers) {
    const old = before?.infergrid.workers.find((x) => x.id === w.id)?.inference_count ?? 0;
    byWorker[w.id] = w.inference_count - old;
  }
  return {
    calls: after.inference_count - (before?.inference_count ?? 0),
    failed: after.inference_stats.fail.count - (before?.inference_stats.fail.count ?? 0),
    /** Per call: time queued on the worker, and time in the model. */
    queueMsMean: perCallMs(before?.inference_stats.queue ?? zero, after.inference_stats.queue),
    computeMsMean: perCallMs(
      before?.inference_stats.compute_infer ?? zero,
      after.inference_stats.compute_infer,
    ),
    byWorker,
  };
}

function statsDelta(before: Map<string, ModelStats>, after: Map<string, ModelStats>, models: string[]) {
  return Object.fromEntries(
    models.flatMap((m) => {
      const a = after.get(m);
      return a ? [[m, modelDelta(before.get(m), a)]] : [];
    }),
  );
}

// ---- scenario ocr-line ----------------------------------------------------------------------------

type Topology = 'disaggregated' | 'colocated' | 'colocated, run on worker';
const TOPOLOGIES: readonly Topology[] = ['disaggregated', 'colocated', 'colocated, run on worker'];

interface DemoModel {
  name: string;
  backend: string;
  path?: string;
  pool?: string;
  workers?: string[];
  cache?: { enabled?: boolean; ttlMs?: number };
  pipeline?: { steps: { model: string }[]; runOn?: string };
  [key: string]: unknown;
}

interface DemoConfig {
  workers?: { id: string }[];
  pools?: { name: string; processes?: number }[];
  models?: DemoModel[];
  [key: string]: unknown;
}

/**
 * The demo config for one topology: ports picked by the OS, no response cache for any model
 * (and no SQLite tier), relative model paths made absolute (the config is written elsewhere),
 * and for `colocated` the pool's processors placed on the model workers instead (with `run on
 * worker`, the pipeline too: it runs on the model workers, against their own models).
 */
function ocrConfig(topology: Topology) {
  const demo = parseYaml(readFileSync(DEMO_CONFIG, 'utf8')) as DemoConfig;
  const models = demo.models ?? [];
  const pipeline = models.find((m) => m.name === OCR_PIPELINE);
  if (!pipeline?.pipeline) throw new Error(`${DEMO_CONFIG} defines no pipeline "${OCR_PIPELINE}"`);
  const modelWorkers = (demo.workers ?? []).map((w) => w.id);
  const pools = demo.pools ?? [];
  const poolWorkers = pools.flatMap((p) =>
    Array.from({ length: p.processes ?? 1 }, (_, i) => ({ id: `${p.name}-${i + 1}`, pool: p.name })),
  );
  for (const m of models) {
    m.cache = { enabled: false };
    if (m.path && !m.path.startsWith('pkg:') && !isAbsolute(m.path))
      m.path = resolve(dirname(DEMO_CONFIG), m.path);
    if (topology !== 'disaggregated' && m.pool !== undefined) {
      delete m.pool;
      m.workers = [...modelWorkers];
    }
  }
  if (topology === 'colocated, run on worker') {
    pipeline.pipeline.runOn = 'worker';
    pipeline.workers = [...modelWorkers];
  }
  const { cache: _cache, pools: _pools, ...rest } = demo;
  const config = {
    ...rest,
    coordinator: { host: '127.0.0.1', port: 0, rpcPort: 0 },
    logging: { level: 'warn' },
    // the demo's step modules stay where they are: beside the demo config
    repository: { roots: [dirname(DEMO_CONFIG)] },
    ...(topology === 'disaggregated' && pools.length ? { pools } : {}),
    models,
  };
  const hosts =
    topology === 'disaggregated' ? [...modelWorkers, ...poolWorkers.map((w) => w.id)] : modelWorkers;
  const placement = new Map<string, string[]>(hosts.map((id) => [id, []]));
  for (const m of models) {
    if (m.backend === 'pipeline' && m.pipeline?.runOn !== 'worker') continue;
    const on =
      m.pool !== undefined ? poolWorkers.filter((w) => w.pool === m.pool).map((w) => w.id) : m.workers;
    for (const id of on ?? hosts) placement.get(id)?.push(m.name);
  }
  const steps = pipeline.pipeline.steps.map((s) => s.model);
  const groups = (pids: Map<string, Spawned>): ProcessGroups => ({
    modelWorkers: modelWorkers.map((id) => pids.get(id)?.child.pid),
    ...(topology === 'disaggregated' ? { pool: poolWorkers.map((w) => pids.get(w.id)?.child.pid) } : {}),
  });
  return { yaml: stringifyYaml(config), placement, steps, groups, workers: hosts, modelWorkers };
}

const misreadOf = (read: readonly string[]) =>
  read.flatMap((text, i) => (text === OCR_LINES[i] ? [] : [{ expected: OCR_LINES[i]!, read: text }]));

const ratios = (a: LoadFigures, b: LoadFigures): Ratios | undefined =>
  b.rps > 0 && b.latencyMs.p50 > 0 && b.latencyMs.p99 > 0
    ? {
        throughput: round(a.rps / b.rps),
        p50: round(a.latencyMs.p50 / b.latencyMs.p50, 2),
        p99: round(a.latencyMs.p99 / b.latencyMs.p99, 2),
      }
    : undefined;

/** What takes turns at one concurrency: a closed-loop run of its load, and the processes it runs on. */
interface OcrTarget {
  run(window: { durationMs: number }): Promise<RunResult>;
  groups: ProcessGroups;
}

/**
 * Every target at one concurrency, for s.durationMs each, in turns of about OCR_SLICE_MS (round r
 * starts at target r), after an untimed warm-up each: drift over the run falls on every target
 * alike. Each target's runs and CPU time (of its own processes, and of this process as its load
 * generator) are summed over its slices.
 */
async function ocrRuns(s: Settings, targets: OcrTarget[]) {
  const rounds = Math.max(1, Math.round(s.durationMs / OCR_SLICE_MS));
  const sliceMs = s.durationMs / rounds;
  const acc = targets.map(() => ({ runs: [] as RunResult[], cpu: undefined as CpuSpent | undefined }));
  for (const t of targets) await t.run({ durationMs: s.warmupMs });
  for (let r = 0; r < rounds; r++)
    for (let k = 0; k < targets.length; k++) {
      const i = (r + k) % targets.length;
      const before = cpuMark(targets[i]!.groups, 'loadGenerator');
      acc[i]!.runs.push(await targets[i]!.run({ durationMs: sliceMs }));
      acc[i]!.cpu = addSpent(acc[i]!.cpu, cpuSpent(before, cpuMark(targets[i]!.groups, 'loadGenerator')));
    }
  // a tenth of a request per second: the ratios to the baseline are judged to the percent
  return acc.map((a) => {
    const load = figures(a.runs, 1);
    return { load, spent: a.cpu! };
  });
}

interface OcrFleet {
  topology: Topology;
  config: ReturnType<typeof ocrConfig>;
  fleet: Fleet;
  url: string;
  groups: ProcessGroups;
  misread: { expected: string; read: string }[];
}

async function ocrScenario(
  s: Settings,
  dir: string,
  disturbed: string[],
): Promise<{ points: OcrPoint[]; baseline: OcrBaseline }> {
  // rendered and encoded once, sent in turn: the load loop only writes bytes
  const images = await Promise.all(
    OCR_LINES.map((text, i) =>
      renderTextLine(text, { rotate180: i % UPSIDE_DOWN_EVERY === UPSIDE_DOWN_EVERY - 1 }),
    ),
  );
  const bodies = images.map((png) =>
    httpBody(encodeInferRequest([{ name: 'image', datatype: 'BYTES', shape: [1], data: [png] }])),
  );
  // as many baseline processes as the topologies have model workers (the same in both)
  const processes = ocrConfig('colocated').modelWorkers.length;
  const alone = await startOcrBaseline(images, processes, READY_TIMEOUT_MS);
  const fleets: OcrFleet[] = [];
  try {
    const baselineRead = await alone.readAll();
    const baselineMisread = misreadOf(baselineRead);
    const baseline: OcrBaseline = {
      processes,
      cores: availableParallelism(),
      linesReadExactly: `${OCR_LINES.length - baselineMisread.length}/${OCR_LINES.length}`,
      misread: baselineMisread,
      differsFromEngine: [],
      points: [],
    };
    // one after the other: two fleets loading their models at once would only slow each other
    for (const [i, topology] of TOPOLOGIES.entries()) {
      const config = ocrConfig(topology);
      const file = join(dir, `ocr-${i}.yaml`);
      writeFileSync(file, config.yaml);
      const fleet = await startFleet(file, config.placement);
      const url = `${fleet.url}/v2/models/${OCR_PIPELINE}/infer`;
      fleets.push({
        topology,
        config,
        fleet,
        url,
        groups: { coordinator: [fleet.coordinator.child.pid], ...config.groups(fleet.workers) },
        misread: [],
      });
      // every line once: the pipeline reads (or misreads) them, and nothing answers from a cache
      const read: string[] = [];
      for (const body of bodies) {
        const { response, cache } = await inferOnce(url, body);
        if (cache !== null)
          throw new Error(`${OCR_PIPELINE} answered from the cache (${cache}); it must be off`);
        read.push(String(response.outputs.find((o) => o.name === 'text')?.data[0] ?? ''));
      }
      fleets.at(-1)!.misread = misreadOf(read);
      read.forEach((text, line) => {
        if (text !== baselineRead[line])
          baseline.differsFromEngine.push({ topology, line, engine: text, baseline: baselineRead[line]! });
      });
    }
    const points: OcrPoint[] = [];
    for (const concurrency of s.concurrencies) {
      const sender = alone.sender();
      const loads = fleets.map((f) => openLoad({ url: f.url, bodies, concurrency }));
      try {
        const targets: OcrTarget[] = [
          {
            run: (window) => runClosedLoop(sender, concurrency, window),
            groups: { baseline: alone.pids },
          },
          ...fleets.map((f, i) => ({ run: loads[i]!.run, groups: f.groups })),
        ];
        const statsBefore = await Promise.all(fleets.map((f) => allStats(f.fleet.url)));
        const [base, ...engine] = await ocrRuns(s, targets);
        const statsAfter = await Promise.all(fleets.map((f) => allStats(f.fleet.url)));
        const baseCpu = cpuFigures<'baseline' | 'loadGenerator'>(base!.spent, base!.load.requests);
        noteDisturbance(disturbed, `ocr-line in one process c=${concurrency}`, baseCpu);
        baseline.points.push({ concurrency, ...base!.load, ...baseCpu });
        fleets.forEach((f, i) => {
          const { load, spent } = engine[i]!;
          const cpu = cpuFigures<'coordinator' | 'modelWorkers' | 'pool' | 'loadGenerator'>(
            spent,
            load.requests,
          );
          // colocated (either way): no pool process
          cpu.cpuMsPerRequest.pool ??= null;
          cpu.coresBusy.pool ??= null;
          noteDisturbance(disturbed, `ocr-line ${f.topology} c=${concurrency}`, cpu);
          const disaggregated = points.find(
            (p) => p.topology === 'disaggregated' && p.concurrency === concurrency,
          );
          const vsDisaggregated =
            f.topology !== 'disaggregated' && disaggregated ? ratios(load, disaggregated) : undefined;
          const vsBaseline = ratios(load, base!.load);
          points.push({
            topology: f.topology,
            concurrency,
            workers: f.config.workers,
            linesReadExactly: `${OCR_LINES.length - f.misread.length}/${OCR_LINES.length}`,
            misread: f.misread,
            ...load,
            ...cpu,
            steps: statsDelta(statsBefore[i]!, statsAfter[i]!, f.config.steps),
            ...(vsDisaggregated ? { vsDisaggregated } : {}),
            ...(vsBaseline ? { vsBaseline } : {}),
          });
        });
      } finally {
        for (const load of loads) load.close();
      }
    }
    return { points, baseline };
  } finally {
    await Promise.all([alone.stop(), ...fleets.map((f) => f.fleet.stop())]);
  }
}

// ---- scenario hop -----------------------------------------------------------------------------------

const pipelineName = (steps: number): string => `${HOP_MODEL}-x${steps}`;
/** The same pipeline with `runOn: worker`. */
const onWorkerName = (steps: number): string => `${pipelineName(steps)}-worker`;
/** A hop target's steps: 1 for the model called directly. */
const stepsOf = (model: string): number => Number(/-x(\d+)/.exec(model)?.[1] ?? 1);

function hopConfigYaml(hopSteps: number[]): string {
  const spec = (name: string) => `[{ name: ${name}, datatype: FP32, shape: [-1, -1] }]`;
  const pipelines = hopSteps.flatMap((n) =>
    [false, true].map((onWorker) => {
      const steps = Array.from({ length: n }, (_, i) => {
        const from = i === 0 ? '$INPUT0' : `s${i}.OUTPUT0`;
        return `        - { name: s${i + 1}, model: ${HOP_MODEL}, inputs: { INPUT0: ${from} } }`;
      });
      return `  - name: ${onWorker ? onWorkerName(n) : pipelineName(n)}
    backend: pipeline
    inputs: ${spec('INPUT0')}
    outputs: ${spec('OUTPUT0')}
    pipeline:
      runOn: ${onWorker ? 'worker' : 'coordinator'}
      steps:
${steps.join('\n')}
      outputs: { OUTPUT0: s${n}.OUTPUT0 }
`;
    }),
  );
  return `coordinator: { host: 127.0.0.1, port: 0, rpcPort: 0 }
logging: { level: warn }
models:
  # sim echoes input i as output i when the datatypes agree: an identity with no latency
  - name: ${HOP_MODEL}
    backend: sim
    sim: { latencyMs: 0 }
    inputs: ${spec('INPUT0')}
    outputs: ${spec('OUTPUT0')}
${pipelines.join('')}`;
}

/**
 * Times every target at one concurrency in interleaved slices (round r starts at target r), so
 * that drift over the run (GC, heap growth, a noisy neighbour on a shared VM) falls on every
 * target alike instead of on whichever ran first; each target's runs, CPU time and worker calls
 * are summed over its slices, on connections kept from slice to slice.
 */
async function hopRuns(
  s: Settings,
  url: string,
  targets: string[],
  body: HttpBody,
  concurrency: number,
  groups: ProcessGroups,
): Promise<Map<string, HopTargetRun>> {
  const sliceMs = Math.min(HOP_SLICE_MS, s.hopDurationMs);
  const rounds = Math.max(1, Math.round(s.hopDurationMs / sliceMs));
  const acc = new Map(
    targets.map((model) => [
      model,
      {
        load: openLoad({ url: `${url}/v2/models/${model}/infer`, bodies: [body], concurrency }),
        runs: [] as RunResult[],
        cpu: undefined as CpuSpent | undefined,
        workerCalls: 0,
      },
    ]),
  );
  try {
    for (const a of acc.values()) await a.load.run({ durationMs: s.warmupMs });
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < targets.length; k++) {
        const a = acc.get(targets[(r + k) % targets.length]!)!;
        const statsBefore = await allStats(url);
        const cpuBefore = cpuMark(groups, 'loadGenerator');
        a.runs.push(await a.load.run({ durationMs: sliceMs }));
        a.cpu = addSpent(a.cpu, cpuSpent(cpuBefore, cpuMark(groups, 'loadGenerator')));
        const statsAfter = await allStats(url);
        a.workerCalls += modelDelta(statsBefore.get(HOP_MODEL), statsAfter.get(HOP_MODEL)!).calls;
      }
    }
  } finally {
    for (const a of acc.values()) a.load.close();
  }
  return new Map(
    [...acc].map(([model, a]) => {
      const load = figures(a.runs);
      return [
        model,
        {
          ...load,
          ...cpuFigures<'coordinator' | 'worker' | 'loadGenerator'>(a.cpu!, load.requests),
          workerCallsPerRequest: load.requests === 0 ? 0 : round(a.workerCalls / load.requests, 2),
        },
      ];
    }),
  );
}

async function hopScenario(s: Settings, dir: string, disturbed: string[]): Promise<HopPoint[]> {
  const file = join(dir, 'hop.yaml');
  writeFileSync(file, hopConfigYaml(s.hopSteps));
  const fleet = await startFleet(file, new Map([['w1', [HOP_MODEL, ...s.hopSteps.map(onWorkerName)]]]));
  const points: HopPoint[] = [];
  try {
    const groups: ProcessGroups = {
      coordinator: [fleet.coordinator.child.pid],
      worker: [fleet.workers.get('w1')?.child.pid],
    };
    const pipelines = [...s.hopSteps.map(pipelineName), ...s.hopSteps.map(onWorkerName)];
    const targets = [HOP_MODEL, ...pipelines];
    /** Cost of one more step, from the shortest and the longest pipeline (undefined with one length). */
    const slope = (byLength: (n: number) => number): number | undefined => {
      const first = s.hopSteps[0]!;
      const last = s.hopSteps.at(-1)!;
      return first === last ? undefined : (byLength(last) - byLength(first)) / (last - first);
    };
    for (const bytes of s.hopBytes) {
      const elements = bytes / 4;
      const data = Float32Array.from({ length: elements }, (_, i) => (i % 1000) / 7);
      const body = httpBody(
        encodeInferRequest([{ name: 'INPUT0', datatype: 'FP32', shape: [1, elements], data }], {
          binary: true,
        }),
      );
      // every target returns the tensor it was sent: the steps really pass it along
      for (const model of targets) {
        const { response } = await inferOnce(`${fleet.url}/v2/models/${model}/infer`, body);
        const out = response.outputs[0]?.data as Float32Array | undefined;
        if (!(out instanceof Float32Array) || out.length !== elements || out.some((v, i) => v !== data[i]))
          throw new Error(`${model} did not return its ${bytes}-byte input unchanged`);
      }
      for (const concurrency of s.hopConcurrencies) {
        const runs = await hopRuns(s, fleet.url, targets, body, concurrency, groups);
        for (const [model, r] of runs)
          noteDisturbance(disturbed, `hop ${model} ${bytes} B c=${concurrency}`, r);
        const p50 = (n: number) => runs.get(pipelineName(n))!.latencyMs.p50;
        const marginalMs = slope(p50);
        const marginalCpuMs = slope(
          (n) => runs.get(pipelineName(n))!.cpuMsPerRequest.coordinator ?? Number.NaN,
        );
        points.push({
          tensor: `FP32 [1,${elements}] (${bytes} bytes), binary both ways`,
          bytes,
          concurrency,
          runs: Object.fromEntries(runs),
          p50Ms: Object.fromEntries(targets.map((m) => [m, runs.get(m)!.latencyMs.p50])),
          addedMsPerStep: Object.fromEntries(
            pipelines.map((m) => [
              m,
              round((runs.get(m)!.latencyMs.p50 - runs.get(HOP_MODEL)!.latencyMs.p50) / stepsOf(m)),
            ]),
          ),
          ...(marginalMs !== undefined ? { marginalMsPerStep: round(marginalMs) } : {}),
          ...(marginalCpuMs !== undefined && !Number.isNaN(marginalCpuMs)
            ? { coordinatorCpuMsPerStep: round(marginalCpuMs) }
            : {}),
        });
      }
    }
  } finally {
    await fleet.stop();
  }
  return points;
}

/**
 * Per concurrency, how the cost of a step grows with the tensor (between the smallest and the
 * largest size), and what a direct worker-to-worker path would save at the largest size.
 */
function hopSummary(s: Settings, hop: HopPoint[]): HopSummary[] {
  const small = Math.min(...s.hopBytes);
  const large = Math.max(...s.hopBytes);
  const longest = s.hopSteps.at(-1)!;
  const dMiB = (large - small) / MIB;
  return s.hopConcurrencies.flatMap((concurrency) => {
    const at = (bytes: number) => hop.find((p) => p.bytes === bytes && p.concurrency === concurrency);
    const sm = at(small);
    const lg = at(large);
    if (small === large || sm?.marginalMsPerStep === undefined || lg?.marginalMsPerStep === undefined)
      return [];
    const msPerMiB = (lg.marginalMsPerStep - sm.marginalMsPerStep) / dMiB;
    const cpuPerMiB =
      sm.coordinatorCpuMsPerStep === undefined || lg.coordinatorCpuMsPerStep === undefined
        ? null
        : (lg.coordinatorCpuMsPerStep - sm.coordinatorCpuMsPerStep) / dMiB;
    // a step's bytes cross twice (to the worker, back); a direct path keeps one crossing per
    // intermediate tensor, and the coordinator touches none of them
    const savedMs = ((longest - 1) * (large / MIB) * msPerMiB) / 2;
    return [
      {
        concurrency,
        marginalMsPerStep: { [small]: sm.marginalMsPerStep, [large]: lg.marginalMsPerStep },
        msPerMiBPerStep: round(msPerMiB),
        coordinatorCpuMsPerMiBPerStep: cpuPerMiB === null ? null : round(cpuPerMiB),
        directWorkerToWorker: {
          pipeline: pipelineName(longest),
          bytes: large,
          savedTransferBytes: (longest - 1) * large,
          estimatedSavedP50Ms: round(savedMs),
          estimatedSavedCoordinatorCpuMs:
            cpuPerMiB === null ? null : round((longest - 1) * (large / MIB) * cpuPerMiB),
        },
      },
    ];
  });
}

async function run(params: PipelineParams): Promise<PipelineResult> {
  const s = settings(params);
  const dir = scratchDir();
  const disturbed: string[] = [];
  const ocr = s.scenarios.has('ocr-line') ? await ocrScenario(s, dir, disturbed) : undefined;
  const hop = s.scenarios.has('hop') ? await hopScenario(s, dir, disturbed) : [];
  return {
    params,
    ocr: ocr?.points ?? [],
    ...(ocr ? { ocrBaseline: ocr.baseline } : {}),
    hop,
    hopSummary: hopSummary(s, hop),
    disturbed,
  };
}

// ---- the engine against the same steps in one process ----------------------------------------------

interface OcrComparison {
  /** The best engine point over every topology, and the baseline's best. */
  engine: OcrPoint;
  baseline: OcrBaselinePoint;
  /** engine.rps / baseline.rps. */
  ratio: number;
  byTopology: { topology: Topology; point: OcrPoint; ratio: number }[];
}

const bestOf = <T extends LoadFigures>(points: readonly T[]): T =>
  points.reduce((a, b) => (b.rps > a.rps ? b : a));

/**
 * The engine against the same steps in one process, each at its best measured concurrency (the
 * engine at its best topology: both are the engine's, a user picks one). Per concurrency would
 * judge the engine's latency more than its throughput: below saturation a closed loop's rate is
 * concurrency / latency, so at concurrency 1 the ratio is the engine's five hops against none.
 * The target is about throughput, what each gets out of the same cores, which is where each
 * saturates; the per-concurrency ratios stay in the table and in the target's figures.
 */
function ocrVsBaseline(
  ocr: readonly OcrPoint[],
  baseline: OcrBaseline | undefined,
): OcrComparison | undefined {
  if (!baseline?.points.length || ocr.length === 0) return undefined;
  const base = bestOf(baseline.points);
  if (!(base.rps > 0)) return undefined;
  const byTopology = [...new Set(ocr.map((p) => p.topology))].map((topology) => {
    const point = bestOf(ocr.filter((p) => p.topology === topology));
    return { topology, point, ratio: round(point.rps / base.rps) };
  });
  const top = byTopology.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  return { engine: top.point, baseline: base, ratio: top.ratio, byTopology };
}

/** What bounds the comparison: CPU per request of each process group at the two best points. */
function ocrBound(cmp: OcrComparison, processes: number, cores: number): string | undefined {
  const e = cmp.engine.cpuMsPerRequest;
  const b = cmp.baseline.cpuMsPerRequest;
  if (e.coordinator === null || e.modelWorkers === null || e.loadGenerator === null) return undefined;
  if (b.baseline === null || b.loadGenerator === null) return undefined;
  const stepsMs = e.modelWorkers + (e.pool ?? 0);
  const engineMs = e.coordinator + stepsMs + e.loadGenerator;
  const baselineMs = b.baseline + b.loadGenerator;
  const busy = (p: { coresBusy: { machine: number | null } }) => cell(p.coresBusy.machine);
  const saturated = [cmp.engine, cmp.baseline].every((p) => (p.coresBusy.machine ?? 0) >= 0.9 * cores);
  const outside = [cmp.engine, cmp.baseline].map((p) => p.coresBusy.outsideBench ?? 0);
  return (
    `CPU per request at those points, every process on ${cores} cores: engine ${cell(engineMs)} ms ` +
    `(coordinator ${cell(e.coordinator)}, model workers ${cell(e.modelWorkers)}, ` +
    `${e.pool === null ? '' : `pool ${cell(e.pool)}, `}load generator ${cell(e.loadGenerator)}) against ${cell(baselineMs)} ms for the same steps in one process ` +
    `(its ${processes} processes ${cell(b.baseline)}, load generator ${cell(b.loadGenerator)}); cores busy ` +
    `${busy(cmp.engine)} against ${busy(cmp.baseline)}` +
    (outside.some((c) => c > DISTURBED_CORES)
      ? `, of which other work ${cell(outside[0])} and ${cell(outside[1])}`
      : '') +
    (saturated
      ? `, so the cores bound the engine at about ${pct(baselineMs / engineMs)} of the baseline. `
      : ` (not saturated: latency, not CPU, bounds these points). `) +
    `The processes that run the steps spend ${cell(stepsMs)} ms per request against the baseline's ` +
    `${cell(b.baseline)} ms for the same step functions and models` +
    (stepsMs > b.baseline
      ? ` (+${cell(stepsMs - b.baseline)} ms${cmp.engine.topology === 'colocated, run on worker' ? ', with no step tensor crossing a socket' : ", taking in and answering each step's tensors among it"})`
      : " (no more in the engine's processes than alone)") +
    `; the rest is the coordinator's ${cell(e.coordinator)} ms (${cmp.engine.topology === 'colocated, run on worker' ? 'one request routed per request, its steps run on the worker' : 'five steps routed per request'}) and the ` +
    `load generator's ${cell(e.loadGenerator)} ms over HTTP against ${cell(b.loadGenerator)} ms over IPC`
  );
}

function ocrStatement(cmp: OcrComparison, processes: number): string {
  return (
    `the engine at its best, ${cell(cmp.engine.rps)} req/s (${cmp.engine.topology}, concurrency ` +
    `${cmp.engine.concurrency}), is ${pct(cmp.ratio)} of the same steps in ${processes} plain processes at ` +
    `their best, ${cell(cmp.baseline.rps)} req/s (concurrency ${cmp.baseline.concurrency}); by topology ` +
    cmp.byTopology.map((t) => `${t.topology} ${pct(t.ratio)}`).join(', ')
  );
}

// ---- the page -------------------------------------------------------------------------------------

function ocrBaselineSection(ocr: OcrPoint[], baseline: OcrBaseline): string[] {
  const topologies = [...new Set(ocr.map((p) => p.topology))];
  const cmp = ocrVsBaseline(ocr, baseline);
  const bound = cmp && ocrBound(cmp, baseline.processes, baseline.cores);
  const differs = baseline.differsFromEngine;
  return [
    `**The same steps in one process**: the same step functions and ONNX models (onnxruntime-node,`,
    `one intra-op thread per session as on the workers) with no engine, in ${baseline.processes} plain processes`,
    '(as many as the model workers: the engine runs onnxruntime in two processes), each reading whole',
    'lines one at a time; the same load engine hands each the next line in turn over IPC, to the process',
    'with the fewest in flight. At each concurrency it and every topology take turns in slices of about',
    `${OCR_SLICE_MS / 1000} s, so drift during the run falls on all alike. It read ${baseline.linesReadExactly} lines exactly, ` +
      (differs.length === 0
        ? 'each as every topology read it.'
        : `but ${differs.length} line(s) otherwise than the engine: not the same work.`),
    '',
    ...table(
      [
        'concurrency',
        'req/s',
        'p50 ms',
        'p99 ms',
        'errors',
        'CPU ms/req processes',
        'load generator',
        'cores busy',
        ...topologies.map((t) => `${t} / it`),
      ],
      baseline.points.map((p) => [
        cell(p.concurrency),
        cell(p.rps, 1),
        cell(p.latencyMs.p50, 1),
        cell(p.latencyMs.p99, 1),
        cell(p.errors),
        cell(p.cpuMsPerRequest.baseline),
        cell(p.cpuMsPerRequest.loadGenerator),
        cell(p.coresBusy.machine),
        ...topologies.map((t) =>
          pct(ocr.find((e) => e.topology === t && e.concurrency === p.concurrency)?.vsBaseline?.throughput),
        ),
      ]),
    ),
    ...(cmp
      ? [`**In short:** ${ocrStatement(cmp, baseline.processes)}.${bound ? ` ${bound}.` : ''}`, '']
      : []),
  ];
}

function ocrSection(ocr: OcrPoint[], baseline: OcrBaseline | undefined, charts: Charts): string[] {
  const topologies = [...new Set(ocr.map((p) => p.topology))];
  const concurrencies = [...new Set(ocr.map((p) => p.concurrency))];
  const at = (t: Topology, c: number) => ocr.find((p) => p.topology === t && p.concurrency === c);
  const alone = baseline?.points ?? [];
  return [
    '### OCR line pipeline, by topology',
    '',
    'The demo pipeline (image → preprocess → classifier → prepare → recognizer → decode → text) on 16',
    'rendered lines in turn, cache off. `disaggregated`: the js steps on their own pool process;',
    '`colocated`: the same steps on the two model workers; `colocated, run on worker`: that placement',
    'with `pipeline.runOn: worker` (each worker runs the whole pipeline against its own models). CPU is per answered request; "vs one',
    'process" is throughput against the same steps with no engine at the same concurrency (below).',
    '',
    ...table(
      [
        'topology',
        'concurrency',
        'req/s',
        'p50 ms',
        'p99 ms',
        'errors',
        'lines read',
        'CPU ms/req coordinator',
        'model workers',
        'pool',
        'vs disaggregated',
        'vs one process',
      ],
      ocr.map((p) => [
        p.topology,
        cell(p.concurrency),
        cell(p.rps),
        cell(p.latencyMs.p50, 1),
        cell(p.latencyMs.p99, 1),
        cell(p.errors),
        p.linesReadExactly,
        cell(p.cpuMsPerRequest.coordinator),
        cell(p.cpuMsPerRequest.modelWorkers),
        cell(p.cpuMsPerRequest.pool),
        pct(p.vsDisaggregated?.throughput),
        pct(p.vsBaseline?.throughput),
      ]),
    ),
    ...(baseline ? ocrBaselineSection(ocr, baseline) : []),
    charts.add(
      'pipeline-ocr-throughput',
      lineChart({
        title: 'Pipeline (ocr-line): throughput by topology',
        xLabel: 'concurrency (closed loop)',
        yLabel: 'requests / s',
        series: [
          ...topologies.map((t) => ({
            name: t,
            points: concurrencies.flatMap((c) => {
              const p = at(t, c);
              return p ? [{ x: c, y: p.rps }] : [];
            }),
          })),
          ...(alone.length
            ? [
                {
                  name: `same steps in one process (${baseline?.processes} processes)`,
                  dashed: true,
                  points: alone.map((p) => ({ x: p.concurrency, y: p.rps })),
                },
              ]
            : []),
        ],
      }),
      'Pipeline: OCR line throughput by topology',
    ),
    '',
    charts.add(
      'pipeline-ocr-latency',
      barChart({
        title: 'Pipeline (ocr-line): latency by topology',
        valueLabel: 'ms',
        categories: concurrencies.map((c) => `concurrency ${c}`),
        series: topologies.flatMap((t) =>
          (['p50', 'p99'] as const).map((q) => ({
            name: `${t} ${q}`,
            values: concurrencies.map((c) => at(t, c)?.latencyMs[q]),
          })),
        ),
      }),
      'Pipeline: OCR line latency percentiles by topology',
    ),
    '',
  ];
}

function hopSection(hop: HopPoint[], summary: HopSummary[], charts: Charts): string[] {
  const steps = stepsOf;
  const onWorker = (model: string): boolean => model.endsWith('-worker');
  const models = [...new Set(hop.flatMap((p) => Object.keys(p.p50Ms)))].sort(
    (a, b) => Number(onWorker(a)) - Number(onWorker(b)) || steps(a) - steps(b),
  );
  const longest = (worker: boolean) =>
    models.filter((m) => onWorker(m) === worker && steps(m) > 1).at(-1) ?? '';
  const out = [
    "### The coordinator's hop per step",
    '',
    'Identity `sim` models chained N times (each step a coordinator → worker → coordinator round trip of',
    'the tensor, binary both ways), against the same model called directly; `-worker`: the same',
    'pipeline with `runOn: worker` (one round trip per request, the steps chained inside the worker).',
    '',
    ...table(
      [
        'tensor',
        'concurrency',
        ...models.map((m) => `p50 ms ${m}`),
        'added ms/step (longest)',
        'added ms/step (longest, on worker)',
        'marginal ms/step',
        'coordinator CPU ms/step',
      ],
      hop.map((p) => [
        bytesText(p.bytes),
        cell(p.concurrency),
        ...models.map((m) => cell(p.p50Ms[m], 3)),
        cell(p.addedMsPerStep[longest(false)], 3),
        cell(p.addedMsPerStep[longest(true)], 3),
        cell(p.marginalMsPerStep, 3),
        cell(p.coordinatorCpuMsPerStep, 3),
      ]),
    ),
  ];
  // one chart per tensor size: a 1 MiB step costs a hundred times a 4 KiB one
  for (const bytes of new Set(hop.map((p) => p.bytes)))
    out.push(
      charts.add(
        `pipeline-hop-${bytes}`,
        lineChart({
          title: `Pipeline (hop): p50 vs steps, ${bytesText(bytes)} tensor`,
          xLabel: 'worker calls per request (1 = the model called directly)',
          yLabel: 'p50 ms',
          xScale: 'linear',
          series: hop
            .filter((p) => p.bytes === bytes)
            .flatMap((p) =>
              [false, true].map((worker) => ({
                name: `concurrency ${cell(p.concurrency)}${worker ? ', run on worker' : ''}`,
                ...(worker ? { dashed: true } : {}),
                points: models.flatMap((m) =>
                  p.p50Ms[m] === undefined || (steps(m) > 1 && onWorker(m) !== worker)
                    ? []
                    : [{ x: steps(m), y: p.p50Ms[m]! }],
                ),
              })),
            ),
        }),
        `Pipeline: p50 latency against the number of steps, ${bytesText(bytes)} tensor`,
      ),
      '',
    );
  for (const s of summary) {
    const direct = s.directWorkerToWorker;
    out.push(
      `- concurrency ${cell(s.concurrency)}: a step costs ${cell(s.msPerMiBPerStep, 3)} ms p50 per MiB of ` +
        `tensor (coordinator CPU ${cell(s.coordinatorCpuMsPerMiBPerStep, 3)} ms per MiB); a direct worker-to-worker ` +
        `path in ${direct.pipeline} at ${bytesText(direct.bytes)} would save about ${cell(direct.estimatedSavedP50Ms, 3)} ms p50 (estimate).`,
    );
  }
  if (summary.length) out.push('');
  return out;
}

function section(result: PipelineResult, charts: Charts): string[] {
  if (result.ocr.length + result.hop.length === 0) return ['_No pipeline results in this run._', ''];
  return [
    ...(result.ocr.length ? ocrSection(result.ocr, result.ocrBaseline, charts) : []),
    ...(result.hop.length ? hopSection(result.hop, result.hopSummary, charts) : []),
  ];
}

// ---- the target -----------------------------------------------------------------------------------

/** Issue 18: the 1 MiB step's added p50 at concurrency 1 was 1.3 ms; the target is half of it. */
const HOP_TARGET_MS = 0.65;
const HOP_TARGET_BYTES = 1024 * 1024;

/** A 1 MiB step's added p50 at concurrency 1, for the longest pipeline run each way. */
function hopTarget(result: PipelineResult | undefined): TargetResult {
  const base = {
    id: 'pipeline-hop-1mib-c1',
    scenario: 'pipeline',
    goal: `pipeline, 1 MiB tensor at concurrency 1: p50 added per step ≤ ${HOP_TARGET_MS} ms (half of 1.3 ms)`,
  };
  const point = result?.hop.find((p) => p.bytes === HOP_TARGET_BYTES && p.concurrency === 1);
  if (!point) return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const longest = (worker: boolean) =>
    Object.keys(point.addedMsPerStep)
      .filter((m) => m.endsWith('-worker') === worker)
      .sort((a, b) => stepsOf(a) - stepsOf(b))
      .at(-1);
  const [coordinatorRun, workerRun] = [longest(false), longest(true)];
  const added = (m: string | undefined) => (m === undefined ? undefined : point.addedMsPerStep[m]);
  const onCoordinator = added(coordinatorRun);
  const onWorker = added(workerRun);
  const best = onWorker ?? onCoordinator;
  if (best === undefined) return { ...base, status: 'not measured', measured: NOT_MEASURED };
  return {
    ...base,
    status: best <= HOP_TARGET_MS ? 'met' : 'not met',
    measured:
      (onWorker === undefined
        ? ''
        : `${cell(onWorker, 3)} ms per step with \`runOn: worker\` (${workerRun}); `) +
      (onCoordinator === undefined
        ? ''
        : `${cell(onCoordinator, 3)} ms per step run by the coordinator (${coordinatorRun})`),
    bound:
      'run by the coordinator, every intermediate tensor crosses two sockets (worker → coordinator → worker); ' +
      'run on the worker, the steps hand their tensors over in its memory and the request crosses the RPC once',
  };
}

function targets(result: PipelineResult | undefined, cores: number): TargetResult[] {
  return [ocrTarget(result, cores), hopTarget(result)];
}

function ocrTarget(result: PipelineResult | undefined, cores: number): TargetResult {
  const base = {
    id: 'pipeline-ocr-vs-in-process',
    scenario: 'pipeline',
    goal: 'ocr-line pipeline: engine throughput ≥ 95% of the same steps in one process',
  };
  const baseline = result?.ocrBaseline;
  const cmp = result && ocrVsBaseline(result.ocr, baseline);
  if (!baseline || !cmp) return { ...base, status: 'not measured', measured: NOT_MEASURED };
  const differs = baseline.differsFromEngine;
  if (differs.length > 0) {
    const d = differs[0]!;
    return {
      ...base,
      status: 'not measured',
      measured:
        `the engine and the same steps in one process read ${differs.length} line(s) differently ` +
        `(${d.topology}, line ${d.line}: "${d.engine}" against "${d.baseline}"): not the same work`,
    };
  }
  const topologies = cmp.byTopology.map((t) => t.topology);
  const perConcurrency = baseline.points
    .map((b) => {
      const at = topologies.map((t) =>
        pct(
          result.ocr.find((p) => p.topology === t && p.concurrency === b.concurrency)?.vsBaseline?.throughput,
        ),
      );
      return `${b.concurrency}: ${at.join(' / ')}`;
    })
    .join(', ');
  const bound = ocrBound(cmp, baseline.processes, cores);
  return {
    ...base,
    status: cmp.ratio >= 0.95 ? 'met' : 'not met',
    measured:
      `${pct(cmp.ratio)}: ${ocrStatement(cmp, baseline.processes)}; at equal concurrency ` +
      `(${topologies.join(' / ')}) ${perConcurrency}`,
    ...(bound ? { bound } : {}),
  };
}

export const pipeline: Scenario<PipelineResult, PipelineParams> = {
  name: 'pipeline',
  title: 'Pipelines',
  params: PARAMS,
  quick: {
    'duration-s': '2',
    'warmup-s': '0.5',
    concurrency: '1,8',
    'hop-duration-s': '1',
    'hop-concurrency': '1,8',
  },
  run,
  section,
  targets,
};

await runIfMain(import.meta.url, pipeline);
