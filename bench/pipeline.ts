/**
 * What a pipeline costs, on real processes (one coordinator, its workers, this load generator):
 *
 * - `ocr-line`: the demo's pipeline (examples/demo-config.yaml: image BYTES -> preprocess ->
 *   classifier -> prepare -> recognizer -> decode -> text), fed 16 rendered text lines in turn,
 *   at several closed-loop concurrencies, in two topologies started one after the other:
 *   `disaggregated` (the demo's: the js processors on their own pool process `pre-1`, the ONNX
 *   models on w1 and w2) and `colocated` (the same processors hosted by w1 and w2, no pool, so
 *   the same two model workers and one process fewer). The response cache is off for every
 *   model, so every request runs every step. Each line carries the engine's per-step queue wait
 *   and run time (GET /v2/models/stats, summed over workers) and the CPU time of each process
 *   group, read from /proc around the timed run.
 * - `hop`: the coordinator's hop per step. `sim` models with no latency echo their input (an
 *   identity), so a pipeline of N such steps costs N coordinator -> worker -> coordinator round
 *   trips of the tensor. A direct request to the sim model is timed against pipelines of N steps
 *   for each tensor size, in binary tensor data both ways (no JSON numbers), on one worker. The
 *   targets take turns in 0.5 s slices, so drift during the run falls on all of them alike.
 *   Reported: p50 added per step against the direct request, the marginal cost of one more step
 *   (between the shortest and longest pipeline) in latency and in coordinator CPU, its growth
 *   per MiB of tensor, and what a direct worker-to-worker path would save (the second transfer
 *   of each intermediate tensor).
 *
 *   npm run bench:pipeline -- --duration-s 10 --concurrency 1,8,32 --scenarios ocr-line,hop
 *
 * Trade-off: the load generator runs in this process (the cycling bodies need it; bench/lib's
 * runLoad sends one body), so it shares the machine's cores with the engine; its CPU time is
 * reported next to the engine's, and so is the CPU the rest of the machine used meanwhile
 * (`coresBusy.outsideBench`): on a small shared machine another job can skew a run. One JSON line
 * per (topology, concurrency) and per (tensor size, concurrency) on stdout, a hop summary line,
 * and a table on stderr at the end.
 */

import { machineBusySeconds, processCpuSeconds } from './lib/proc.ts';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { decodeInferResponse, encodeInferRequest } from '../src/client/index.ts';
import { adminWorkers, type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { renderTextLine } from '../tests/fixtures/render-text.ts';
import { type LoadResult, summarize } from './lib/load.ts';
import { benchParams, numberList } from './lib/params.ts';
import { DISTURBED_CORES, disturbedWarning, fmt, table } from './lib/report-table.ts';
import { report } from './lib/results.ts';

const params = benchParams({
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
});
const scenarios = new Set(params.scenarios.split(',').map((s) => s.trim()));
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const hopDurationMs = Number(params['hop-duration-s']) * 1000;
const concurrencies = numberList(params.concurrency);
const hopConcurrencies = numberList(params['hop-concurrency']);
const hopBytes = numberList(params['hop-bytes']);
const hopSteps = numberList(params['hop-steps']).sort((a, b) => a - b);
{
  const problems: string[] = [];
  const unknown = [...scenarios].filter((s) => s !== 'ocr-line' && s !== 'hop');
  if (unknown.length) problems.push(`--scenarios: unknown ${unknown.join(', ')} (ocr-line, hop)`);
  if (!(durationMs > 0)) problems.push('--duration-s must be > 0');
  if (!(hopDurationMs > 0)) problems.push('--hop-duration-s must be > 0');
  if (!(warmupMs >= 0)) problems.push('--warmup-s must be >= 0');
  if (concurrencies.length === 0) problems.push('--concurrency must list positive integers');
  if (hopConcurrencies.length === 0) problems.push('--hop-concurrency must list positive integers');
  if (hopBytes.length === 0 || hopBytes.some((b) => !Number.isInteger(b) || b % 4 !== 0))
    problems.push('--hop-bytes must list positive multiples of 4 (FP32 elements)');
  if (hopSteps.length === 0 || hopSteps.some((n) => !Number.isInteger(n) || n < 2))
    problems.push('--hop-steps must list integers >= 2');
  if (problems.length) throw new RangeError(problems.join('; '));
}

const DEMO_CONFIG = fileURLToPath(new URL('../examples/demo-config.yaml', import.meta.url));
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
/** A request that takes longer counts as an error, so a hung engine cannot stall the run, ms. */
const REQUEST_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 120_000;
/** Length of one hop slice; targets take turns slice by slice, ms. */
const HOP_SLICE_MS = 500;
const MIB = 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-'));
const stops: (() => Promise<unknown>)[] = [];
const track = (stop: () => Promise<unknown>): void => {
  stops.push(stop);
};
const stopAll = () => Promise.all(stops.map((stop) => stop()));
process.once('SIGINT', () => {
  void stopAll().finally(() => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  });
});

const round = (v: number, digits = 3): number => Math.round(v * 10 ** digits) / 10 ** digits;

// ---- load generation --------------------------------------------------------------------------

interface HttpCall {
  body: Buffer;
  headers: Record<string, string>;
}

function callOnce(agent: Agent, url: URL, call: HttpCall): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(
      url,
      { agent, method: 'POST', headers: { ...call.headers, 'content-length': String(call.body.length) } },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolvePromise(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () =>
      req.destroy(Object.assign(new Error('request timed out'), { code: 'TIMEOUT' })),
    );
    req.on('error', reject);
    req.end(call.body);
  });
}

/** What closed-loop slices answered, merged before summarizing. */
interface LoadSamples {
  samplesMs: number[];
  errors: number;
  errorKinds: Record<string, number>;
  seconds: number;
}

const noSamples = (): LoadSamples => ({ samplesMs: [], errors: 0, errorKinds: {}, seconds: 0 });

/**
 * bench/lib's closed loop (`concurrency` loops, one request in flight each on its own keep-alive
 * connection of `agent`), sending `calls` in turn for `loopMs`; adds what it saw to `into`.
 */
async function closedLoopSamples(
  target: string,
  calls: HttpCall[],
  concurrency: number,
  loopMs: number,
  agent: Agent,
  into: LoadSamples = noSamples(),
): Promise<LoadSamples> {
  const url = new URL(target);
  let next = 0;
  const start = performance.now();
  const end = start + loopMs;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const call = calls[next++ % calls.length]!;
      const t0 = performance.now();
      try {
        const status = await callOnce(agent, url, call);
        if (status === 200) into.samplesMs.push(performance.now() - t0);
        else {
          into.errors++;
          into.errorKinds[String(status)] = (into.errorKinds[String(status)] ?? 0) + 1;
        }
      } catch (err) {
        into.errors++;
        const kind = (err as NodeJS.ErrnoException).code ?? 'error';
        into.errorKinds[kind] = (into.errorKinds[kind] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  into.seconds += (performance.now() - start) / 1000;
  return into;
}

function loadResult(s: LoadSamples): LoadResult {
  return {
    requests: s.samplesMs.length,
    errors: s.errors,
    errorKinds: s.errorKinds,
    durationS: round(s.seconds),
    rps: s.seconds === 0 ? 0 : Math.round(s.samplesMs.length / s.seconds),
    latencyMs: summarize(s.samplesMs),
  };
}

/** One closed-loop run on fresh connections. */
async function closedLoop(
  target: string,
  calls: HttpCall[],
  concurrency: number,
  loopMs: number,
): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    return loadResult(await closedLoopSamples(target, calls, concurrency, loopMs, agent));
  } finally {
    agent.destroy();
  }
}

function httpCall(request: ReturnType<typeof encodeInferRequest>): HttpCall {
  return { body: Buffer.from(request.body), headers: request.headers };
}

/** One request through fetch, decoded; throws on an error status. */
async function inferOnce(url: string, call: HttpCall) {
  const res = await fetch(url, { method: 'POST', body: call.body, headers: call.headers });
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

// ---- CPU time -----------------------------------------------------------------------------------

/** Key of the whole machine's busy seconds in a CpuMark. */
const MACHINE = 'machine';

/** Process groups by name -> their pids; this process is added as `loadGenerator`. */
type ProcessGroups = Record<string, (number | undefined)[]>;

interface CpuMark {
  at: number;
  seconds: Record<string, number | undefined>;
}

function cpuMark(groups: ProcessGroups): CpuMark {
  const usage = process.cpuUsage();
  const seconds: Record<string, number | undefined> = {};
  for (const [group, pids] of Object.entries(groups)) {
    const each = pids.map(processCpuSeconds);
    seconds[group] = each.some((s) => s === undefined) ? undefined : each.reduce((a, b) => a! + b!, 0);
  }
  seconds.loadGenerator = (usage.user + usage.system) / 1e6;
  seconds[MACHINE] = machineBusySeconds();
  return { at: performance.now(), seconds };
}

/** CPU seconds each group spent between two marks (undefined where /proc could not be read). */
function cpuSpent(a: CpuMark, b: CpuMark): Record<string, number | undefined> {
  return Object.fromEntries(
    Object.keys(b.seconds).map((group) => {
      const x = a.seconds[group];
      const y = b.seconds[group];
      return [group, x === undefined || y === undefined ? undefined : y - x];
    }),
  );
}

/**
 * CPU seconds each group spent over `wallS` seconds, the cores it kept busy (1 = one core all the
 * time), and its CPU time per answered request.
 */
function cpuReport(spentS: Record<string, number | undefined>, wallS: number, requests: number) {
  const cpuSeconds: Record<string, number | null> = {};
  const coresBusy: Record<string, number | null> = {};
  const cpuMsPerRequest: Record<string, number | null> = {};
  let ours = 0;
  for (const [group, spent] of Object.entries(spentS)) {
    if (group === MACHINE) continue;
    ours += spent ?? Number.NaN;
    cpuSeconds[group] = spent === undefined ? null : round(spent, 2);
    coresBusy[group] = spent === undefined ? null : round(spent / wallS, 2);
    cpuMsPerRequest[group] =
      spent === undefined ? null : requests === 0 ? 0 : round((1000 * spent) / requests, 2);
  }
  // other work on the machine (another test run, say) competes for the same cores: shown, so a
  // disturbed run can be told from a slow engine
  const machine = spentS[MACHINE];
  coresBusy.outsideBench =
    machine === undefined || Number.isNaN(ours) ? null : round(Math.max(0, machine - ours) / wallS, 2);
  return { cpuSeconds, coresBusy, cpuMsPerRequest };
}

function cpuBetween(a: CpuMark, b: CpuMark, requests: number) {
  return cpuReport(cpuSpent(a, b), (b.at - a.at) / 1000, requests);
}

// ---- the workers' statistics ---------------------------------------------------------------------

interface CountNs {
  count: number;
  ns: number;
}

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

// ---- summary table ---------------------------------------------------------------------------------

const ocrRows: string[][] = [];
const hopRows: string[][] = [];
const hopNotes: string[] = [];
/** Points during which the rest of the machine kept more than DISTURBED_CORES busy. */
const disturbed: string[] = [];

function noteDisturbance(point: string, outsideCores: number | null): void {
  if (outsideCores !== null && outsideCores > DISTURBED_CORES) disturbed.push(`${point} (${outsideCores})`);
}

// ---- scenario ocr-line ----------------------------------------------------------------------------

type Topology = 'disaggregated' | 'colocated';

interface DemoModel {
  name: string;
  backend: string;
  path?: string;
  pool?: string;
  workers?: string[];
  cache?: { enabled?: boolean; ttlMs?: number };
  pipeline?: { steps: { model: string }[] };
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
 * and for `colocated` the pool's processors placed on the model workers instead.
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
    if (topology === 'colocated' && m.pool !== undefined) {
      delete m.pool;
      m.workers = [...modelWorkers];
    }
  }
  const { cache: _cache, pools: _pools, ...rest } = demo;
  const config = {
    ...rest,
    coordinator: { host: '127.0.0.1', port: 0, rpcPort: 0 },
    logging: { level: 'warn' },
    ...(topology === 'disaggregated' && pools.length ? { pools } : {}),
    models,
  };
  const hosts =
    topology === 'disaggregated' ? [...modelWorkers, ...poolWorkers.map((w) => w.id)] : modelWorkers;
  const placement = new Map<string, string[]>(hosts.map((id) => [id, []]));
  for (const m of models) {
    if (m.backend === 'pipeline') continue;
    const on =
      m.pool !== undefined ? poolWorkers.filter((w) => w.pool === m.pool).map((w) => w.id) : m.workers;
    for (const id of on ?? hosts) placement.get(id)?.push(m.name);
  }
  const steps = pipeline.pipeline.steps.map((s) => s.model);
  const groups = (pids: Map<string, Spawned>): ProcessGroups => ({
    modelWorkers: modelWorkers.map((id) => pids.get(id)?.child.pid),
    ...(topology === 'disaggregated' ? { pool: poolWorkers.map((w) => pids.get(w.id)?.child.pid) } : {}),
  });
  return { yaml: stringifyYaml(config), placement, steps, groups, workers: hosts };
}

interface OcrPoint {
  rps: number;
  p50: number;
  p99: number;
}

async function ocrScenario(): Promise<void> {
  // rendered and encoded once, sent in turn: the load loop only writes bytes
  const images = await Promise.all(
    OCR_LINES.map((text, i) =>
      renderTextLine(text, { rotate180: i % UPSIDE_DOWN_EVERY === UPSIDE_DOWN_EVERY - 1 }),
    ),
  );
  const calls = images.map((png) =>
    httpCall(encodeInferRequest([{ name: 'image', datatype: 'BYTES', shape: [1], data: [png] }])),
  );
  const disaggregated = new Map<number, OcrPoint>();
  for (const topology of ['disaggregated', 'colocated'] as const) {
    const config = ocrConfig(topology);
    const file = join(dir, `ocr-${topology}.yaml`);
    writeFileSync(file, config.yaml);
    const fleet = await startFleet(file, config.placement);
    try {
      const target = `${fleet.url}/v2/models/${OCR_PIPELINE}/infer`;
      // every line once: the pipeline reads (or misreads) them, and nothing answers from a cache
      const misread: { expected: string; read: string }[] = [];
      for (const [i, call] of calls.entries()) {
        const { response, cache } = await inferOnce(target, call);
        if (cache !== null)
          throw new Error(`${OCR_PIPELINE} answered from the cache (${cache}); it must be off`);
        const read = String(response.outputs.find((o) => o.name === 'text')?.data[0] ?? '');
        if (read !== OCR_LINES[i]) misread.push({ expected: OCR_LINES[i]!, read });
      }
      const groups: ProcessGroups = {
        coordinator: [fleet.coordinator.child.pid],
        ...config.groups(fleet.workers),
      };
      for (const concurrency of concurrencies) {
        await closedLoop(target, calls, concurrency, warmupMs);
        const statsBefore = await allStats(fleet.url);
        const cpuBefore = cpuMark(groups);
        const result = await closedLoop(target, calls, concurrency, durationMs);
        const cpuAfter = cpuMark(groups);
        const statsAfter = await allStats(fleet.url);
        const cpu = cpuBetween(cpuBefore, cpuAfter, result.requests);
        noteDisturbance(`ocr-line ${topology} c=${concurrency}`, cpu.coresBusy.outsideBench ?? null);
        const base = disaggregated.get(concurrency);
        if (topology === 'disaggregated')
          disaggregated.set(concurrency, {
            rps: result.rps,
            p50: result.latencyMs.p50,
            p99: result.latencyMs.p99,
          });
        const vs =
          topology === 'colocated' && base && base.rps > 0 && base.p50 > 0
            ? {
                throughput: round(result.rps / base.rps),
                p50: round(result.latencyMs.p50 / base.p50, 2),
                p99: round(result.latencyMs.p99 / base.p99, 2),
              }
            : undefined;
        report('pipeline', {
          scenario: 'ocr-line',
          params,
          topology,
          workers: config.workers,
          lines: OCR_LINES.length,
          linesReadExactly: `${OCR_LINES.length - misread.length}/${OCR_LINES.length}`,
          ...(misread.length ? { misread } : {}),
          concurrency,
          ...result,
          ...cpu,
          steps: statsDelta(statsBefore, statsAfter, config.steps),
          ...(vs ? { vsDisaggregated: vs } : {}),
        });
        const c = cpu.cpuMsPerRequest;
        ocrRows.push([
          topology,
          String(concurrency),
          String(result.rps),
          fmt(result.latencyMs.p50),
          fmt(result.latencyMs.p99),
          String(result.errors),
          fmt(c.coordinator),
          fmt(c.modelWorkers),
          fmt(c.pool),
          fmt(c.loadGenerator),
          fmt(cpu.coresBusy.outsideBench),
          vs ? `${vs.throughput}x` : '-',
        ]);
      }
    } finally {
      await fleet.stop();
    }
  }
}

// ---- scenario hop -----------------------------------------------------------------------------------

const pipelineName = (steps: number): string => `${HOP_MODEL}-x${steps}`;

function hopConfigYaml(): string {
  const spec = (name: string) => `[{ name: ${name}, datatype: FP32, shape: [-1, -1] }]`;
  const pipelines = hopSteps.map((n) => {
    const steps = Array.from({ length: n }, (_, i) => {
      const from = i === 0 ? '$INPUT0' : `s${i}.OUTPUT0`;
      return `        - { name: s${i + 1}, model: ${HOP_MODEL}, inputs: { INPUT0: ${from} } }`;
    });
    return `  - name: ${pipelineName(n)}
    backend: pipeline
    inputs: ${spec('INPUT0')}
    outputs: ${spec('OUTPUT0')}
    pipeline:
      steps:
${steps.join('\n')}
      outputs: { OUTPUT0: s${n}.OUTPUT0 }
`;
  });
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

interface HopRun {
  result: LoadResult;
  cpuMsPerRequest: Record<string, number | null>;
  coresBusy: Record<string, number | null>;
  workerCallsPerRequest: number;
}

/** Cost of one more step, from the shortest and the longest pipeline (undefined with one length). */
function slope(byLength: Map<number, number>): number | undefined {
  const first = hopSteps[0]!;
  const last = hopSteps[hopSteps.length - 1]!;
  if (first === last) return undefined;
  return (byLength.get(last)! - byLength.get(first)!) / (last - first);
}

/**
 * Times every target at one concurrency in interleaved slices (round r starts at target r), so
 * that drift over the run (GC, heap growth, a noisy neighbour on a shared VM) falls on every
 * target alike instead of on whichever ran first; each target's samples, CPU time and worker
 * calls are summed over its slices.
 */
async function hopRuns(
  url: string,
  targets: string[],
  call: HttpCall,
  concurrency: number,
  groups: ProcessGroups,
): Promise<Map<string, HopRun>> {
  const sliceMs = Math.min(HOP_SLICE_MS, hopDurationMs);
  const rounds = Math.max(1, Math.round(hopDurationMs / sliceMs));
  const acc = new Map(
    targets.map((model) => [
      model,
      {
        url: `${url}/v2/models/${model}/infer`,
        agent: new Agent({ keepAlive: true, maxSockets: concurrency }),
        samples: noSamples(),
        cpuS: {} as Record<string, number | undefined>,
        wallS: 0,
        workerCalls: 0,
      },
    ]),
  );
  try {
    for (const a of acc.values()) await closedLoopSamples(a.url, [call], concurrency, warmupMs, a.agent);
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < targets.length; k++) {
        const a = acc.get(targets[(r + k) % targets.length]!)!;
        const statsBefore = await allStats(url);
        const cpuBefore = cpuMark(groups);
        await closedLoopSamples(a.url, [call], concurrency, sliceMs, a.agent, a.samples);
        const cpuAfter = cpuMark(groups);
        const statsAfter = await allStats(url);
        a.wallS += (cpuAfter.at - cpuBefore.at) / 1000;
        for (const [group, spent] of Object.entries(cpuSpent(cpuBefore, cpuAfter))) {
          const sum = a.cpuS[group];
          a.cpuS[group] =
            spent === undefined || (group in a.cpuS && sum === undefined) ? undefined : (sum ?? 0) + spent;
        }
        a.workerCalls += modelDelta(statsBefore.get(HOP_MODEL), statsAfter.get(HOP_MODEL)!).calls;
      }
    }
  } finally {
    for (const a of acc.values()) a.agent.destroy();
  }
  return new Map(
    [...acc].map(([model, a]) => {
      const result = loadResult(a.samples);
      return [
        model,
        {
          result,
          ...cpuReport(a.cpuS, a.wallS, result.requests),
          workerCallsPerRequest: result.requests === 0 ? 0 : round(a.workerCalls / result.requests, 2),
        },
      ];
    }),
  );
}

async function hopScenario(): Promise<void> {
  const file = join(dir, 'hop.yaml');
  writeFileSync(file, hopConfigYaml());
  const fleet = await startFleet(file, new Map([['w1', [HOP_MODEL]]]));
  /** Per concurrency, per tensor size: marginal ms and coordinator CPU ms per step. */
  const perStep = new Map<number, Map<number, { ms: number; coordinatorCpuMs: number | null }>>();
  try {
    const groups: ProcessGroups = {
      coordinator: [fleet.coordinator.child.pid],
      worker: [fleet.workers.get('w1')?.child.pid],
    };
    const targets = [HOP_MODEL, ...hopSteps.map(pipelineName)];
    for (const bytes of hopBytes) {
      const elements = bytes / 4;
      const data = Float32Array.from({ length: elements }, (_, i) => (i % 1000) / 7);
      const call = httpCall(
        encodeInferRequest([{ name: 'INPUT0', datatype: 'FP32', shape: [1, elements], data }], {
          binary: true,
        }),
      );
      // every target returns the tensor it was sent: the steps really pass it along
      for (const model of targets) {
        const { response } = await inferOnce(`${fleet.url}/v2/models/${model}/infer`, call);
        const out = response.outputs[0]?.data as Float32Array | undefined;
        if (!(out instanceof Float32Array) || out.length !== elements || out.some((v, i) => v !== data[i]))
          throw new Error(`${model} did not return its ${bytes}-byte input unchanged`);
      }
      for (const concurrency of hopConcurrencies) {
        const runs = await hopRuns(fleet.url, targets, call, concurrency, groups);
        for (const [model, r] of runs)
          noteDisturbance(`hop ${model} ${bytes} B c=${concurrency}`, r.coresBusy.outsideBench ?? null);
        const direct = runs.get(HOP_MODEL)!;
        const p50 = (n: number) => runs.get(pipelineName(n))!.result.latencyMs.p50;
        const coordinatorCpu = (n: number) =>
          runs.get(pipelineName(n))!.cpuMsPerRequest.coordinator ?? Number.NaN;
        const marginalMs = slope(new Map(hopSteps.map((n) => [n, p50(n)])));
        const marginalCpuMs = slope(new Map(hopSteps.map((n) => [n, coordinatorCpu(n)])));
        if (marginalMs !== undefined) {
          const bySize = perStep.get(concurrency) ?? new Map();
          bySize.set(bytes, {
            ms: marginalMs,
            coordinatorCpuMs:
              marginalCpuMs === undefined || Number.isNaN(marginalCpuMs) ? null : marginalCpuMs,
          });
          perStep.set(concurrency, bySize);
        }
        const addedMsPerStep = Object.fromEntries(
          hopSteps.map((n) => [pipelineName(n), round((p50(n) - direct.result.latencyMs.p50) / n)]),
        );
        report('pipeline', {
          scenario: 'hop',
          params,
          tensor: `FP32 [1,${elements}] (${bytes} bytes), binary both ways`,
          bytes,
          concurrency,
          runs: Object.fromEntries(
            [...runs].map(([model, { result, ...rest }]) => [model, { ...result, ...rest }]),
          ),
          p50Ms: Object.fromEntries(targets.map((m) => [m, runs.get(m)!.result.latencyMs.p50])),
          /** (p50 of the N-step pipeline - p50 of the direct request) / N. */
          addedMsPerStep,
          /** p50 cost of one more step: (p50 of the longest - p50 of the shortest pipeline) / (steps apart). */
          ...(marginalMs !== undefined ? { marginalMsPerStep: round(marginalMs) } : {}),
          ...(marginalCpuMs !== undefined ? { coordinatorCpuMsPerStep: round(marginalCpuMs) } : {}),
          directWorkerToWorker: Object.fromEntries(
            hopSteps.map((n) => [
              pipelineName(n),
              {
                /** Each of the N-1 intermediate tensors goes worker -> coordinator -> worker. */
                intermediateBytesThroughCoordinator: 2 * (n - 1) * bytes,
                /** A direct path sends each once, worker -> worker: the second transfer is saved. */
                savedTransferBytes: (n - 1) * bytes,
              },
            ]),
          ),
        });
        hopRows.push([
          String(bytes),
          String(concurrency),
          ...targets.map((m) => fmt(runs.get(m)!.result.latencyMs.p50, 3)),
          ...targets.map((m) => String(runs.get(m)!.result.rps)),
          ...hopSteps.map((n) => fmt(addedMsPerStep[pipelineName(n)], 3)),
          fmt(marginalMs, 3),
          fmt(marginalCpuMs, 3),
          String([...runs.values()].reduce((s, r) => s + r.result.errors, 0)),
          fmt(Math.max(...[...runs.values()].map((r) => r.coresBusy.outsideBench ?? Number.NaN))),
        ]);
      }
    }
  } finally {
    await fleet.stop();
  }
  hopSummary(perStep);
}

/**
 * Per concurrency, how the cost of a step grows with the tensor (between the smallest and the
 * largest size), and what a direct worker-to-worker path would save at the largest size.
 */
function hopSummary(
  perStep: Map<number, Map<number, { ms: number; coordinatorCpuMs: number | null }>>,
): void {
  const small = Math.min(...hopBytes);
  const large = Math.max(...hopBytes);
  if (small === large || perStep.size === 0) return;
  const longest = hopSteps[hopSteps.length - 1]!;
  const dMiB = (large - small) / MIB;
  const byConcurrency = [...perStep].map(([concurrency, bySize]) => {
    const s = bySize.get(small)!;
    const l = bySize.get(large)!;
    const msPerMiB = (l.ms - s.ms) / dMiB;
    const cpuPerMiB =
      s.coordinatorCpuMs === null || l.coordinatorCpuMs === null
        ? null
        : (l.coordinatorCpuMs - s.coordinatorCpuMs) / dMiB;
    // a step's bytes cross twice (to the worker, back); a direct path keeps one crossing per
    // intermediate tensor, and the coordinator touches none of them
    const savedMs = ((longest - 1) * (large / MIB) * msPerMiB) / 2;
    const savedCpuMs = cpuPerMiB === null ? null : (longest - 1) * (large / MIB) * cpuPerMiB;
    hopNotes.push(
      `c=${concurrency}: a step costs ${fmt(s.ms, 3)} ms p50 at ${small} B and ${fmt(l.ms, 3)} ms at ${large} B: ` +
        `${fmt(msPerMiB, 3)} ms per MiB per step (coordinator CPU ${fmt(cpuPerMiB, 3)} ms per MiB per step). ` +
        `A direct worker-to-worker path in the ${longest}-step pipeline at ${large} B would skip ` +
        `${(longest - 1) * large} B of transfers: about ${fmt(savedMs, 3)} ms p50 and ${fmt(savedCpuMs, 3)} ms of coordinator CPU per request.`,
    );
    return {
      concurrency,
      marginalMsPerStep: { [small]: round(s.ms), [large]: round(l.ms) },
      msPerMiBPerStep: round(msPerMiB),
      coordinatorCpuMsPerMiBPerStep: cpuPerMiB === null ? null : round(cpuPerMiB),
      directWorkerToWorker: {
        pipeline: pipelineName(longest),
        bytes: large,
        savedTransferBytes: (longest - 1) * large,
        /** Half of the intermediate tensors' byte cost: one of their two crossings. An estimate. */
        estimatedSavedP50Ms: round(savedMs),
        /** All of the coordinator's byte work on the intermediate tensors. An estimate. */
        estimatedSavedCoordinatorCpuMs: savedCpuMs === null ? null : round(savedCpuMs),
      },
    };
  });
  report('pipeline', { scenario: 'hop-summary', params, byConcurrency });
}

// ---- main -------------------------------------------------------------------------------------------

try {
  if (scenarios.has('ocr-line')) await ocrScenario();
  if (scenarios.has('hop')) await hopScenario();
} finally {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
}

if (ocrRows.length) {
  console.error(
    `\nocr-line (${params['duration-s']} s per point; CPU in ms per request; other cores: busy outside the bench)`,
  );
  console.error(
    table(
      [
        'topology',
        'conc',
        'rps',
        'p50 ms',
        'p99 ms',
        'errors',
        'coord',
        'models',
        'pool',
        'loadgen',
        'other cores',
        'vs disagg',
      ],
      ocrRows,
    ),
  );
}
if (hopRows.length) {
  const targets = [HOP_MODEL, ...hopSteps.map(pipelineName)];
  console.error(`\nhop (${params['hop-duration-s']} s per point; p50 in ms; per step in ms)`);
  console.error(
    table(
      [
        'bytes',
        'conc',
        ...targets.map((t) => `p50 ${t}`),
        ...targets.map((t) => `rps ${t}`),
        ...hopSteps.map((n) => `added/step x${n}`),
        'marginal/step',
        'coord cpu/step',
        'errors',
        'other cores',
      ],
      hopRows,
    ),
  );
  for (const note of hopNotes) console.error(note);
}
if (disturbed.length) {
  console.error(`\n${disturbedWarning(disturbed)}`);
}
