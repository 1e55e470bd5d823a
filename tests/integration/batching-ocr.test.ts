/**
 * Batching must not change a request's result: eight text lines sent to the real PaddleOCR
 * models through the worker's batcher (executed as one batch of 8, checked in the
 * statistics) give each line the same outputs, within 1e-5, as running it alone.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import ort from 'onnxruntime-node';
import { createBackends } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import {
  ctcGreedyDecode,
  imageToClassifierInput,
  imageToRecognizerInput,
  loadCharset,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import { bytesOf, type Tensor } from '../../src/tensor/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { ModelHost } from '../../src/worker/index.ts';
import { renderTextLine } from '../fixtures/render-text.ts';

const LINES = [
  'Hello World',
  'infergrid 2026',
  'The quick brown fox',
  'OCR test 42',
  'batch of eight',
  'Jumps over',
  'Queue 7',
  'zero padding',
];
const TOLERANCE = 1e-5;

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

const asFloats = (t: Tensor): Float32Array => new Float32Array(t.data.slice().buffer);

test('batching - batched results equal unbatched ones for the real OCR models', {
  timeout: 120_000,
}, async (t) => {
  const assets = resolveOcrAssets();
  const { models } = configSchema.parse({
    models: [
      {
        name: 'rec',
        backend: 'onnx',
        path: assets.recognizerPath,
        maxBatchSize: 8,
        batching: { enabled: true, maxQueueDelayMs: 60_000 },
      },
      {
        name: 'cls',
        backend: 'onnx',
        path: assets.classifierPath,
        maxBatchSize: 8,
        inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
        batching: { enabled: true, maxQueueDelayMs: 60_000 },
      },
    ],
  });
  const host = new ModelHost(createBackends(), silentLogger());
  t.after(() => host.unloadAll());
  for (const m of models) assert.equal((await host.load(m)).state, 'ready');
  const charset = loadCharset(assets.keysPath);
  const options = { intraOpNumThreads: 1, interOpNumThreads: 1 };

  for (const [name, path, prepare] of [
    ['rec', assets.recognizerPath, (png: Buffer) => imageToRecognizerInput(png, { padToWidth: 320 })],
    ['cls', assets.classifierPath, imageToClassifierInput],
  ] as const) {
    await t.test(`${name}: one batch of 8 gives every line what it gets alone`, async () => {
      const images = await Promise.all(LINES.map((l) => renderTextLine(l)));
      const inputs = await Promise.all(images.map((png) => prepare(png)));
      const model = host.get(name, undefined);
      const toTensor = (i: { data: Float32Array; shape: number[] }): Tensor[] => [
        { name: 'x', datatype: 'FP32', shape: i.shape, data: bytesOf(i.data) },
      ];
      // keep the model busy with one request, so the eight queue behind it and leave as one batch
      const warmup = model.batcher.submit({ inputs: toTensor(inputs[0]!) });
      const batched = await Promise.all(inputs.map((i) => model.batcher.submit({ inputs: toTensor(i) })));
      await warmup;
      const stats = model.stats.snapshot();
      assert.deepEqual(
        stats.batchStats.map((b) => [b.batchSize, b.computeInfer.count]),
        [
          [1, 1],
          [8, 1],
        ],
        'the eight requests ran as one batch',
      );

      const session = await ort.InferenceSession.create(path, options);
      t.after(() => session.release());
      for (const [i, input] of inputs.entries()) {
        const alone = await session.run({ x: new ort.Tensor('float32', input.data, input.shape) });
        const expected = alone[session.outputNames[0]!]!;
        const got = batched[i]![0]!;
        assert.deepEqual(got.shape, expected.dims, `line ${i}: its own rows only`);
        const diff = maxAbsDiff(asFloats(got), expected.data as Float32Array);
        assert.ok(diff <= TOLERANCE, `"${LINES[i]}": batched and alone differ by ${diff}`);
        if (name === 'rec') {
          const [, steps, classes] = got.shape as [number, number, number];
          assert.equal(ctcGreedyDecode(asFloats(got), steps, classes, charset).text, LINES[i]);
        }
      }
    });
  }
});
