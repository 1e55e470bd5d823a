/**
 * The engine's own cost. With the `sim` backend at 0 ms (no model compute at all), a KServe v2
 * infer request goes HTTP -> coordinator -> RPC -> worker -> RPC -> coordinator -> HTTP. In
 * the same run, the same request and response go through a bare fastify route (the floor for
 * any HTTP service here) and the backend is called in-process (the floor for the model call).
 *
 *   npm run bench:overhead -- --duration-s 5 --concurrency 1,64
 *
 * The timed load at each concurrency is split into --rounds rounds that take turns (bare,
 * engine, traced engine, then engine, traced, bare, ...; bench/lib/rounds.ts), each target's
 * rounds pooled into one result: on a shared VM whose speed drifts by tens of percent within
 * minutes, a drift reaches every target alike instead of whichever ran during it.
 *
 * Every server runs in its own process; the load comes from this one (the load engine in this
 * process, bench/lib/load.ts, fresh connections for each round). All of them share the machine's
 * cores, as they would on a laptop. Around each timed run the CPU time of every serving process
 * (from /proc) and of this one (the load) is read: `cpuUsPerRequest` says what a request costs
 * each of them, which is what bounds throughput when the cores are shared. Last,
 * `processRoundTrip`: 256 bytes sent to a bare TCP echo process and back, one at a time — the
 * floor for the one hop (coordinator -> worker) the engine adds to the bare route.
 *
 * Tracing: a second coordinator and worker run with OpenTelemetry on (--sample-ratio of the
 * requests recorded, default 1: all; OTLP/HTTP JSON to a receiver in this process that counts and
 * drops the spans), measured in the same rounds as the engine with tracing off.
 */

import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSimBackend } from '../../src/backends/index.ts';
import { LatencyHistogram } from '../../src/cli/bench/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { spawnProcess } from '../../tests/fixtures/processes.ts';
import { counters, delta } from '../lib/cache-counters.ts';
import { type EngineTarget, startEngine } from '../lib/engine.ts';
import { jsonBody, type LoadFigures, type Percentiles, percentiles, runLoad } from '../lib/load.ts';
import { type Charts, cell, pct, round, table } from '../lib/markdown.ts';
import { scratchDir, track } from '../lib/processes.ts';
import { interleavedRounds, pool, type TargetRun } from '../lib/rounds.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import { pingPong } from '../lib/socket-floor.ts';
import { barChart, lineChart } from '../lib/svg.ts';

const PARAMS = {
  'duration-s': '5',
  concurrency: '1,32,64',
  elements: '16',
  'warmup-s': '1',
  /** Share of requests the traced engine records (tracing.sampleRatio). */
  'sample-ratio': '1',
  /**
   * The timed load is split into this many rounds that take turns (bare, engine, traced, then engine,
   * traced, bare, ...): a drift in the machine's speed (a shared VM's neighbours) reaches all of them alike.
   */
  rounds: '3',
};
type OverheadParams = typeof PARAMS;

type EngineGroups = 'coordinator' | 'worker' | 'loadGenerator';

export interface OverheadPoint {
  concurrency: number;
  engine: TargetRun<EngineGroups>;
  bareFastify: TargetRun<'server' | 'loadGenerator'>;
  /** The engine with tracing on. */
  traced: TargetRun<EngineGroups>;
  /**
   * The same engine answering from its memory response cache: the same request to a second model
   * (`echo-cached`, cache on), so every timed request is a hit (checked on the coordinator's counters).
   */
  cached?: TargetRun<EngineGroups>;
  /** Engine over bare. */
  ratio: { throughput: number; p50: number; p99: number };
  /** Cache hit over bare, and over the engine's miss path (the `engine` target, cache off). */
  cachedRatio?: { throughput: number; p50: number; vsMissThroughput: number; vsMissP50: number };
  engineAddedP50Ms: number;
  tracedVsOff: { throughput: number; addedP50Ms: number; addedP99Ms: number };
}

export interface OverheadResult {
  params: OverheadParams;
  tensor: string;
  points: OverheadPoint[];
  backendInProcess: { callsPerS: number; latencyMs: Percentiles };
  /** The floor for the engine's extra hop: 256 bytes to another process and back on a socket. */
  processRoundTrip: { roundTrips: number; latencyMs: Percentiles };
  /** What the no-op OTLP receiver got while measuring (spans still buffered are not counted). */
  tracingReceiver: { exports: number; spans: number; bytes: number };
}

/**
 * A no-op OTLP/HTTP receiver: drops each export unread but for counting its spans (one
 * "startTimeUnixNano" each, searched chunk by chunk: cheap, a marker split across two chunks is
 * missed), and answers 200. It shares this process with the load, so it is kept this light.
 */
async function startNoopReceiver() {
  const received = { exports: 0, spans: 0, bytes: 0 };
  const marker = Buffer.from('"startTimeUnixNano"');
  const server = createServer((req, res) => {
    req.on('data', (chunk: Buffer) => {
      received.bytes += chunk.length;
      for (let at = chunk.indexOf(marker); at >= 0; at = chunk.indexOf(marker, at + 1)) received.spans++;
    });
    req.on('end', () => {
      received.exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  track(async () => server.close());
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, received };
}

/** The backend alone, in this process: the floor for the model call. */
async function directBackend(elements: number, ms: number): Promise<OverheadResult['backendInProcess']> {
  const spec = { name: 'INPUT0', datatype: 'FP32', shape: [-1, elements] };
  const model = await createSimBackend().load(
    configSchema.parse({
      models: [{ name: 'echo', backend: 'sim', inputs: [spec], outputs: [{ ...spec, name: 'OUTPUT0' }] }],
    }).models[0]!,
    { warn: () => {} },
  );
  const input = {
    name: 'INPUT0',
    datatype: 'FP32' as const,
    shape: [1, elements],
    data: new Uint8Array(4 * elements),
  };
  const signal = new AbortController().signal;
  // into a histogram, not an array: a growing array of millions of samples stalls the loop while
  // it is copied, which quantised calls/s to its growth steps (2,200,895 in two runs)
  const histogram = new LatencyHistogram();
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t0 = performance.now();
    await model.infer([input], { signal, parameters: {} });
    histogram.record(performance.now() - t0);
  }
  return { callsPerS: Math.round(histogram.count / (ms / 1000)), latencyMs: percentiles(histogram) };
}

/** A server measured: the engine, or the bare route (whose one process is `server`). */
type Target = Pick<EngineTarget, 'url'> & { pids: Record<string, number | undefined>; model?: string };

async function run(params: OverheadParams): Promise<OverheadResult> {
  const durationMs = Number(params['duration-s']) * 1000;
  const warmupMs = Number(params['warmup-s']) * 1000;
  const elements = Number(params.elements);
  const rounds = Math.max(1, Math.round(Number(params.rounds)));
  const configFile = join(scratchDir(), 'config.yaml');
  writeFileSync(
    configFile,
    `coordinator: { port: 0, rpcPort: 0 }
logging: { level: warn }
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, ${elements}] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, ${elements}] }]
  - name: echo-cached
    backend: sim
    cache: { enabled: true }
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, ${elements}] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, ${elements}] }]
`,
  );
  const receiver = await startNoopReceiver();
  const engine = await startEngine(configFile);
  const traced = await startEngine(configFile, {
    env: {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: params['sample-ratio'],
      // export every 100 ms rather than every 5 s, so the traced rounds' exports (and the receiver's
      // work in this process) land in those rounds, not in the bare or engine rounds after them
      OTEL_BSP_SCHEDULE_DELAY: '100',
    },
  });
  const script = (name: string): string => fileURLToPath(new URL(`../lib/${name}`, import.meta.url));
  const bareServer = await spawnProcess([], { cleanup: track, script: script('bare-server.ts') });
  const bare: Target = {
    url: `http://127.0.0.1:${bareServer.ready.httpPort}`,
    pids: { server: bareServer.child.pid },
  };
  const echo = await spawnProcess([], { cleanup: track, script: script('echo-server.ts') });

  const body = jsonBody({
    inputs: [
      {
        name: 'INPUT0',
        datatype: 'FP32',
        shape: [1, elements],
        data: Array.from({ length: elements }, (_, i) => i / 8),
      },
    ],
  });
  const urlOf = (target: Target): string => `${target.url}/v2/models/${target.model ?? 'echo'}/infer`;
  const answer = async (target: Target) =>
    (await fetch(urlOf(target), { method: 'POST', body: body.body, headers: body.headers })).text();
  const [engineAnswer, bareAnswer] = [await answer(engine), await answer(bare)];
  if (engineAnswer !== bareAnswer)
    throw new Error(`the baseline must answer the same JSON:\n${engineAnswer}\n${bareAnswer}`);
  // the cache-hit target: the same engine, the model with its response cache on, stored by this miss
  const cached: Target = { ...engine, model: 'echo-cached' };
  const outputsOf = (text: string) => JSON.stringify((JSON.parse(text) as { outputs: unknown }).outputs);
  for (const expected of ['miss', 'hit']) {
    const cachedAnswer = await answer(cached);
    const said = (JSON.parse(cachedAnswer) as { parameters?: { infergrid_cache?: string } }).parameters;
    if (outputsOf(cachedAnswer) !== outputsOf(engineAnswer) || said?.infergrid_cache !== expected)
      throw new Error(
        `the cached model must answer the same outputs, a ${expected}:\n${cachedAnswer}\n${engineAnswer}`,
      );
  }

  const points: OverheadPoint[] = [];
  for (const concurrency of numberList(params.concurrency)) {
    const targets = [bare, engine, traced, cached];
    const countsBefore = await counters(engine.url, 'echo-cached');
    const spec = (target: Target) => ({ url: urlOf(target), bodies: [body], concurrency });
    // fresh connections for each round
    const measured = await interleavedRounds(
      targets.map((target) => ({ pids: target.pids, run: (window) => runLoad(spec(target), window) })),
      { rounds, durationMs, warmupMs },
    );
    const bareRun = pool<'server' | 'loadGenerator'>(measured[0]!);
    const engineRun = pool<EngineGroups>(measured[1]!);
    const tracedRun = pool<EngineGroups>(measured[2]!);
    const cachedRun = pool<EngineGroups>(measured[3]!);
    // warm-ups included, so at least every timed request; a miss would mean the figure is not a hit's
    const counted = delta(await counters(engine.url, 'echo-cached'), countsBefore);
    if (counted.misses !== 0 || counted.workerInferences !== 0 || counted.hits < cachedRun.requests)
      throw new Error(
        `the cached target must answer from the cache: counters ${JSON.stringify(counted)} for ${cachedRun.requests} timed requests`,
      );
    points.push({
      concurrency,
      engine: engineRun,
      bareFastify: bareRun,
      traced: tracedRun,
      cached: cachedRun,
      cachedRatio: {
        throughput: round(cachedRun.rps / bareRun.rps, 3),
        p50: round(cachedRun.latencyMs.p50 / bareRun.latencyMs.p50, 2),
        vsMissThroughput: round(cachedRun.rps / engineRun.rps, 3),
        vsMissP50: round(cachedRun.latencyMs.p50 / engineRun.latencyMs.p50, 2),
      },
      ratio: {
        throughput: round(engineRun.rps / bareRun.rps, 3),
        p50: round(engineRun.latencyMs.p50 / bareRun.latencyMs.p50, 2),
        p99: round(engineRun.latencyMs.p99 / bareRun.latencyMs.p99, 2),
      },
      engineAddedP50Ms: round(engineRun.latencyMs.p50 - bareRun.latencyMs.p50, 3),
      tracedVsOff: {
        throughput: round(tracedRun.rps / engineRun.rps, 3),
        addedP50Ms: round(tracedRun.latencyMs.p50 - engineRun.latencyMs.p50, 3),
        addedP99Ms: round(tracedRun.latencyMs.p99 - engineRun.latencyMs.p99, 3),
      },
    });
  }
  return {
    params,
    tensor: `FP32 [1,${elements}]`,
    points,
    backendInProcess: await directBackend(elements, Math.min(durationMs, 2000)),
    processRoundTrip: await pingPong(echo.ready.httpPort!, Math.min(durationMs, 3000)),
    tracingReceiver: { ...receiver.received },
  };
}

// ---- the page -------------------------------------------------------------------------------------

const SERIES_NAMES = {
  engine: 'engine',
  bareFastify: 'bare fastify',
  traced: 'engine + tracing',
  cached: 'engine, memory cache hit',
} as const;

const latency = (r: LoadFigures): string =>
  [r.latencyMs.p50, r.latencyMs.p90, r.latencyMs.p99].map((v) => cell(v, 3)).join(' / ');

function section(result: OverheadResult, charts: Charts): string[] {
  const { points } = result;
  const out = [
    "The engine's own cost: the `sim` backend at 0 ms (no model compute) through HTTP → coordinator →",
    'worker → coordinator → HTTP, against a bare fastify route answering the same JSON (the floor for',
    `any HTTP service here), in the same run. Tensor ${result.tensor}. The memory cache hit is the same`,
    'request to a second model of the same engine with its response cache on (every timed request a hit,',
    "checked on the coordinator's counters): HTTP → coordinator → memory → HTTP.",
    '',
    ...table(
      [
        'concurrency',
        'engine req/s',
        'bare fastify req/s',
        'engine / bare',
        'engine p50 / p90 / p99 ms',
        'bare p50 / p90 / p99 ms',
        'added p50 ms',
        `engine + tracing req/s (sample ${result.params['sample-ratio']})`,
        'memory cache hit req/s (/ bare, / miss)',
        'hit p50 / p90 / p99 ms',
      ],
      points.map((p) => [
        cell(p.concurrency),
        cell(p.engine.rps),
        cell(p.bareFastify.rps),
        pct(p.ratio.throughput),
        latency(p.engine),
        latency(p.bareFastify),
        cell(p.engineAddedP50Ms, 3),
        `${cell(p.traced.rps)} (${pct(p.tracedVsOff.throughput)} of off)`,
        p.cached && p.cachedRatio
          ? `${cell(p.cached.rps)} (${pct(p.cachedRatio.throughput)}, ${pct(p.cachedRatio.vsMissThroughput)})`
          : '-',
        p.cached ? latency(p.cached) : '-',
      ]),
    ),
    // its latencies are below the millisecond rounding of the results: the rate says more
    `The backend called in-process (no HTTP, no processes): ${cell(result.backendInProcess.callsPerS)} calls/s, ` +
      `${cell(1e6 / result.backendInProcess.callsPerS, 2)} µs per call.`,
    '',
    charts.add(
      'overhead-throughput',
      lineChart({
        title: 'Overhead: throughput vs concurrency (sim backend, 0 ms)',
        xLabel: 'concurrency (closed loop)',
        yLabel: 'requests / s',
        series: (['engine', 'bareFastify', 'traced', 'cached'] as const)
          .filter((key) => points.every((p) => p[key] !== undefined))
          .map((key) => ({
            name: SERIES_NAMES[key],
            points: points.map((p) => ({ x: p.concurrency, y: p[key]?.rps ?? 0 })),
          })),
      }),
      'Overhead: throughput vs concurrency, engine against bare fastify',
    ),
    '',
  ];
  for (const p of points) {
    const qs = ['p50', 'p90', 'p99'] as const;
    out.push(
      charts.add(
        `overhead-latency-c${p.concurrency}`,
        barChart({
          title: `Overhead: latency percentiles at concurrency ${p.concurrency}`,
          valueLabel: 'ms',
          categories: [...qs],
          series: [
            { name: 'engine', values: qs.map((q) => p.engine.latencyMs[q]) },
            { name: 'bare fastify', values: qs.map((q) => p.bareFastify.latencyMs[q]) },
            { name: 'engine + tracing', values: qs.map((q) => p.traced.latencyMs[q]) },
            ...(p.cached
              ? [{ name: SERIES_NAMES.cached, values: qs.map((q) => p.cached!.latencyMs[q]) }]
              : []),
          ],
        }),
        `Overhead: latency percentiles at concurrency ${p.concurrency}`,
      ),
      '',
    );
  }
  return out;
}

// ---- the targets ----------------------------------------------------------------------------------

/** How the cores were spent per request at concurrency 64, engine against bare. */
function cpuBound(p: OverheadPoint, cores: number): string | undefined {
  const { coordinator, worker, loadGenerator: engineLoad } = p.engine.cpuUsPerRequest;
  const { server, loadGenerator: bareLoad } = p.bareFastify.cpuUsPerRequest;
  if (coordinator === null || worker === null || engineLoad === null || server === null || bareLoad === null)
    return undefined;
  const engineTotal = coordinator + worker + engineLoad;
  const bareTotal = server + bareLoad;
  return (
    `CPU per request, all processes on ${cores} cores: engine ${cell(engineTotal)} µs (coordinator ${cell(coordinator)}, ` +
    `worker ${cell(worker)}, load generator ${cell(engineLoad)}) against bare ${cell(bareTotal)} µs (fastify ${cell(server)}, ` +
    `load generator ${cell(bareLoad)}): the cores bound the engine at about ${Math.round((bareTotal / engineTotal) * 100)}% of bare`
  );
}

/** What the one more process hop costs at concurrency 1, from the socket floor and CPU per request. */
function hopBound(p: OverheadPoint, result: OverheadResult): string {
  const hopMs = result.processRoundTrip.latencyMs.p50;
  const { coordinator, worker } = p.engine.cpuUsPerRequest;
  const { server } = p.bareFastify.cpuUsPerRequest;
  return (
    `the engine adds ${cell((p.engine.latencyMs.p50 - p.bareFastify.latencyMs.p50) * 1000)} µs to the bare route's p50 with one more process hop: ` +
    `a bare socket round trip between two processes here is ${cell(hopMs * 1000)} µs p50, and the rest is ` +
    `the coordinator's and the worker's own work` +
    (coordinator === null || worker === null || server === null
      ? ''
      : ` — at concurrency 1 they spend ${cell(coordinator + worker)} µs of CPU per request (coordinator ` +
        `${cell(coordinator)}, worker ${cell(worker)}) where bare fastify spends ${cell(server)}, wake-ups included ` +
        `and not all of it on the request's path`)
  );
}

// issue 18's targets (they replaced the first ones: throughput ≥ 50% at 64, p50 ≤ 2× at 1)
const C64_THROUGHPUT = 0.6;
const C1_P50 = 1.6;
const HIT_THROUGHPUT = 0.8;
const HIT_CONCURRENCIES = [1, 32];

/** A cache hit against bare fastify and against a miss, at one concurrency. */
function hitTarget(p: OverheadPoint | undefined, concurrency: number): TargetResult {
  const goal = {
    id: `overhead-cache-hit-c${concurrency}`,
    scenario: 'overhead',
    goal: `overhead, concurrency ${concurrency}: a memory cache hit's throughput ≥ ${pct(HIT_THROUGHPUT)} of bare fastify, and a hit never slower than a miss`,
  };
  if (!p?.cached || !p.cachedRatio) return { ...goal, status: 'not measured', measured: NOT_MEASURED };
  const { cached } = p;
  const { throughput, vsMissThroughput, vsMissP50 } = p.cachedRatio;
  const { coordinator } = cached.cpuUsPerRequest;
  const { server } = p.bareFastify.cpuUsPerRequest;
  const missCoordinator = p.engine.cpuUsPerRequest.coordinator;
  return {
    ...goal,
    status: throughput >= HIT_THROUGHPUT && vsMissThroughput >= 1 && vsMissP50 <= 1 ? 'met' : 'not met',
    measured:
      `${pct(throughput)} of bare (${cell(cached.rps)} vs ${cell(p.bareFastify.rps)} req/s); ` +
      `against a miss ${round(vsMissThroughput, 2)}× the throughput, p50 ${cell(cached.latencyMs.p50, 3)} vs ${cell(p.engine.latencyMs.p50, 3)} ms`,
    ...(coordinator === null || server === null || missCoordinator === null
      ? {}
      : {
          bound: `CPU per request: the coordinator answering a hit ${cell(coordinator)} µs (a miss: ${cell(missCoordinator)} µs, worker not counted), bare fastify ${cell(server)} µs`,
        }),
  };
}

function targets(result: OverheadResult | undefined, cores: number): TargetResult[] {
  const at = (c: number) => result?.points.find((p) => p.concurrency === c && p.bareFastify.rps > 0);
  const c64 = at(64);
  const c1 = at(1);
  const throughput = {
    id: 'overhead-c64-throughput',
    scenario: 'overhead',
    goal: `overhead, concurrency 64: engine throughput ≥ ${pct(C64_THROUGHPUT)} of bare fastify`,
  };
  const latency = {
    id: 'overhead-c1-p50',
    scenario: 'overhead',
    goal: `overhead, concurrency 1: engine p50 ≤ ${C1_P50}× bare fastify p50`,
  };
  const bound = c64 && cpuBound(c64, cores);
  const c1Ratio = c1 ? c1.engine.latencyMs.p50 / c1.bareFastify.latencyMs.p50 : 0;
  return [
    c64
      ? {
          ...throughput,
          status: c64.engine.rps / c64.bareFastify.rps >= C64_THROUGHPUT ? 'met' : 'not met',
          measured: `${Math.round((c64.engine.rps / c64.bareFastify.rps) * 100)}% (${cell(c64.engine.rps)} vs ${cell(c64.bareFastify.rps)} req/s)`,
          ...(bound ? { bound } : {}),
        }
      : { ...throughput, status: 'not measured', measured: NOT_MEASURED },
    c1 && result
      ? {
          ...latency,
          status: c1Ratio <= C1_P50 ? 'met' : 'not met',
          measured: `${round(c1Ratio, 2)}× (${cell(c1.engine.latencyMs.p50, 3)} vs ${cell(c1.bareFastify.latencyMs.p50, 3)} ms)`,
          bound: hopBound(c1, result),
        }
      : { ...latency, status: 'not measured', measured: NOT_MEASURED },
    ...HIT_CONCURRENCIES.map((c) => hitTarget(at(c), c)),
  ];
}

export const overhead: Scenario<OverheadResult, OverheadParams> = {
  name: 'overhead',
  title: 'Overhead: the engine against a bare HTTP route',
  params: PARAMS,
  // keeps both concurrencies the targets are stated at
  quick: { 'duration-s': '2', 'warmup-s': '0.5', concurrency: '1,32,64' },
  run,
  section,
  targets,
};

await runIfMain(import.meta.url, overhead);
