/**
 * The `ocr-line` pipeline's js steps, each loaded through the real js backend and chained with
 * the real ONNX classifier and recognizer: exact text for rendered lines (one upside down), the
 * in-process reference agreeing with the chain, and every bad input refused as INVALID_ARGUMENT.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Backend, LoadedModel } from '../../src/backends/index.ts';
import { createBackends } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import {
  imageToRecognizerInput,
  loadCharset,
  OCR_STEP_MODULES,
  type OcrLineModels,
  readLineInProcess,
  readLinesInProcess,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import {
  bytesOf,
  decodeBytesElements,
  encodeBytesElements,
  type Tensor,
  typedView,
} from '../../src/tensor/index.ts';
import { renderTextLine } from '../fixtures/render-text.ts';
import { pngClaiming } from '../fixtures/png.ts';

const assets = resolveOcrAssets();
const backends = createBackends();
const ctx = (outputs?: string[]) => ({ signal: new AbortController().signal, parameters: {}, outputs });

async function load(raw: Record<string, unknown>): Promise<LoadedModel> {
  const config = configSchema.parse({ models: [raw] }).models[0]!;
  return (backends.get(config.backend) as Backend).load(config, { warn: () => {} });
}

const steps: Record<'pre' | 'prep' | 'dec' | 'cls' | 'rec', LoadedModel> = {} as never;
before(async () => {
  const loaded = await Promise.all([
    load({ name: 'pre', backend: 'js', path: OCR_STEP_MODULES.preprocess }),
    load({ name: 'prep', backend: 'js', path: OCR_STEP_MODULES.prepare }),
    load({ name: 'dec', backend: 'js', path: OCR_STEP_MODULES.decode }),
    load({
      name: 'cls',
      backend: 'onnx',
      path: assets.classifierPath,
      inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
    }),
    load({ name: 'rec', backend: 'onnx', path: assets.recognizerPath }),
  ]);
  [steps.pre, steps.prep, steps.dec, steps.cls, steps.rec] = loaded;
});
after(async () => {
  await Promise.all(Object.values(steps).map((m) => m.dispose()));
});

const floats = (t: Tensor): Float32Array => typedView('FP32', t.data) as Float32Array;
const ints = (t: Tensor): Int32Array => typedView('INT32', t.data) as Int32Array;
const strings = (t: Tensor): string[] =>
  decodeBytesElements(t.data).map((b) => Buffer.from(b).toString('utf8'));
const imageTensor = (images: readonly Uint8Array[]): Tensor => ({
  name: 'image',
  datatype: 'BYTES',
  shape: [images.length],
  data: encodeBytesElements(images),
});
const fp32 = (name: string, shape: number[], values: number[] | Float32Array): Tensor => ({
  name,
  datatype: 'FP32',
  shape,
  data: bytesOf(Float32Array.from(values)),
});
const renamed = (t: Tensor, name: string): Tensor => ({ ...t, name });

/** preprocess → classifier → prepare → recognizer → decode, through the loaded models. */
async function chain(images: readonly Uint8Array[]) {
  const image = imageTensor(images);
  const [clsIn] = await steps.pre.infer([image], ctx());
  const [clsOut] = await steps.cls.infer([clsIn!], ctx());
  const [recIn, angle] = await steps.prep.infer([image, renamed(clsOut!, 'cls')], ctx());
  const [probs] = await steps.rec.infer([recIn!], ctx());
  const [text, confidence] = await steps.dec.infer([renamed(probs!, 'probs')], ctx());
  return {
    recWidth: recIn!.shape[3]!,
    results: strings(text!).map((t, i) => ({
      text: t,
      confidence: floats(confidence!)[i]!,
      angle: ints(angle!)[i] === 180 ? 180 : 0,
    })),
  };
}

async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  message: RegExp,
): Promise<InfergridError> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof InfergridError, `expected an InfergridError, got ${caught}`);
  assert.equal(caught.code, code, caught.message);
  assert.match(caught.message, message);
  return caught;
}

const LINES = ['Hello World', 'infergrid 2026', 'The quick brown fox', 'OCR test 42'];
const UPSIDE_DOWN = 2;

test('ocr steps - the chained steps read rendered lines exactly, turning the upside-down one', async () => {
  const images = await Promise.all(LINES.map((l, i) => renderTextLine(l, { rotate180: i === UPSIDE_DOWN })));
  const { results, recWidth } = await chain(images);
  assert.deepEqual(
    results.map((r) => [r.text, r.angle]),
    LINES.map((l, i) => [l, i === UPSIDE_DOWN ? 180 : 0]),
  );
  for (const r of results) assert.ok(r.confidence > 0.9 && r.confidence <= 1, `${r.text}: ${r.confidence}`);
  const widths = await Promise.all(images.map(async (png) => (await imageToRecognizerInput(png)).shape[3]));
  assert.equal(recWidth, Math.max(...widths), 'the batch is padded to its widest line');

  const alone = await chain([images[UPSIDE_DOWN]!]);
  assert.deepEqual(
    alone.results.map((r) => [r.text, r.angle]),
    [[LINES[UPSIDE_DOWN], 180]],
  );
});

test('ocr steps - the in-process reference gives what the chained step models give', async () => {
  const images = await Promise.all(LINES.map((l, i) => renderTextLine(l, { rotate180: i === UPSIDE_DOWN })));
  const models: OcrLineModels = {
    async cls(x) {
      const [out] = await steps.cls.infer([fp32('x', x.shape, x.data)], ctx());
      return floats(out!);
    },
    async rec(x) {
      const [out] = await steps.rec.infer([fp32('x', x.shape, x.data)], ctx());
      return { data: floats(out!), shape: out!.shape };
    },
  };
  const charset = loadCharset(assets.keysPath);
  assert.deepEqual(await readLinesInProcess(images, models, { charset }), (await chain(images)).results);
  assert.deepEqual(
    await readLineInProcess(images[UPSIDE_DOWN]!, models, { charset }),
    (await chain([images[UPSIDE_DOWN]!])).results[0],
  );
});

test('ocr steps - preprocess refuses bad images with INVALID_ARGUMENT naming the image', async () => {
  const good = await renderTextLine('ok');
  const run = (images: Uint8Array[]) => steps.pre.infer([imageTensor(images)], ctx());
  await rejectsWith(
    run([good, Buffer.alloc(0)]),
    'INVALID_ARGUMENT',
    /^image 1 is empty \(0 bytes\); expected PNG or JPEG$/,
  );
  await rejectsWith(
    run([Buffer.from('hello, not an image')]),
    'INVALID_ARGUMENT',
    /^image 0 is not a PNG or JPEG \(19 bytes starting 68 65 6c/,
  );
  await rejectsWith(
    run([good.subarray(0, 60)]),
    'INVALID_ARGUMENT',
    /^image 0 could not be decoded: .*\(expected PNG or JPEG\)/,
  );
  await rejectsWith(
    run([good, await pngClaiming(50_000, 50_000)]),
    'INVALID_ARGUMENT',
    /^image 1 is too large: 50000x50000 pixels exceeds the limit of 50000000; crop/,
  );
  const several = await rejectsWith(
    run([Buffer.alloc(0), good, Buffer.from('x')]),
    'INVALID_ARGUMENT',
    /^image 0 is empty .* \(and 1 more bad image\)$/,
  );
  assert.deepEqual(several.details, {
    images: [
      { index: 0, reason: 'empty' },
      { index: 2, reason: 'not-png-or-jpeg' },
    ],
  });
  await rejectsWith(run([]), 'INVALID_ARGUMENT', /expected at least one image/);
  await rejectsWith(
    steps.pre.infer([{ ...imageTensor([good]), shape: [2] }], ctx()),
    'INVALID_ARGUMENT',
    /input "image": shape \[2\] says 2 elements but the data holds 1/,
  );
  await rejectsWith(
    steps.pre.infer([{ ...imageTensor([good]), data: Buffer.from([9, 0, 0, 0, 1]) }], ctx()),
    'INVALID_ARGUMENT',
    /input "image": BYTES element 0 says 9 bytes/,
  );
  await rejectsWith(
    steps.pre.infer([fp32('image', [1, 2], [0, 0])], ctx()),
    'INVALID_ARGUMENT',
    /input "image": expected BYTES \[-1\], got FP32 \[1,2\]/,
  );
  await rejectsWith(steps.pre.infer([], ctx()), 'INVALID_ARGUMENT', /missing input "image"/);
});

test('ocr steps - prepare checks cls against the images and names a bad image', async () => {
  const good = await renderTextLine('ok');
  const image = imageTensor([good, good]);
  const run = (inputs: Tensor[]) => steps.prep.infer(inputs, ctx());
  await rejectsWith(
    run([image, fp32('cls', [1, 2], [1, 0])]),
    'INVALID_ARGUMENT',
    /input "cls": expected FP32 \[2,2\], one row per image, got FP32 \[1,2\] for 2 images/,
  );
  await rejectsWith(
    run([image, fp32('cls', [2, 3], [1, 0, 0, 1, 0, 0])]),
    'INVALID_ARGUMENT',
    /input "cls": expected FP32 \[-1,2\], got FP32 \[2,3\]/,
  );
  await rejectsWith(
    run([image, { name: 'cls', datatype: 'FP64', shape: [2, 2], data: new Uint8Array(32) }]),
    'INVALID_ARGUMENT',
    /input "cls": expected FP32 \[-1,2\], got FP64 \[2,2\]/,
  );
  await rejectsWith(
    run([image, { ...fp32('cls', [2, 2], [1, 0, 1, 0]), data: new Uint8Array(12) }]),
    'INVALID_ARGUMENT',
    /input "cls": FP32 \[2,2\] needs 16 bytes, got 12/,
  );
  await rejectsWith(run([image]), 'INVALID_ARGUMENT', /missing input "cls"/);
  await rejectsWith(
    run([image, fp32('cls', [2, 2], [1, 0, 1, 0]), fp32('extra', [1], [0])]),
    'INVALID_ARGUMENT',
    /unexpected input "extra"/,
  );
  await rejectsWith(
    run([imageTensor([good, await pngClaiming(50_000, 50_000)]), fp32('cls', [2, 2], [1, 0, 0, 1])]),
    'INVALID_ARGUMENT',
    /^image 1 is too large: 50000x50000 pixels exceeds the limit of 50000000/,
  );
});

test('ocr steps - prepare rotates only when P(180°) reaches rotateThreshold, and pads with 0', async (t) => {
  const [short, long] = await Promise.all([renderTextLine('ab'), renderTextLine('a longer line')]);
  const image = imageTensor([short, long, short, short]);
  // FP32 0.9 is just below the double 0.9; it still counts as reaching the default threshold.
  const cls = fp32('cls', [4, 2], [0.05, 0.95, 1, 0, 0.2, 0.8, 0.1, 0.9]);
  const [x, angle] = await steps.prep.infer([image, cls], ctx());
  assert.deepEqual([...ints(angle!)], [180, 0, 0, 180]);

  const strict = await load({
    name: 'strict',
    backend: 'js',
    path: OCR_STEP_MODULES.prepare,
    options: { rotateThreshold: 0.99 },
  });
  t.after(() => strict.dispose());
  const [, strictAngle] = await strict.infer([image, cls], ctx(['x', 'angle']));
  assert.deepEqual([...ints(strictAngle!)], [0, 0, 0, 0]);
  const [onlyAngle, ...rest] = await strict.infer([image, cls], ctx(['angle']));
  assert.deepEqual([onlyAngle!.name, rest.length], ['angle', 0], 'only the requested output');

  const [shortAlone, longAlone] = await Promise.all([
    imageToRecognizerInput(short),
    imageToRecognizerInput(long),
  ]);
  const narrow = shortAlone.shape[3];
  const width = longAlone.shape[3];
  assert.deepEqual(x!.shape, [4, 3, 48, width]);
  const rows = floats(x!);
  const plane = 48 * width;
  for (let r = 0; r < 3 * 48; r++) {
    // item 2 is upright `short`: its own pixels, then zeros up to the batch width
    const row = rows.subarray((2 * 3 * 48 + r) * width, (2 * 3 * 48 + r + 1) * width);
    assert.deepEqual(row.subarray(0, narrow), shortAlone.data.subarray(r * narrow, (r + 1) * narrow));
    assert.ok(
      row.subarray(narrow).every((v) => v === 0),
      `row ${r} is padded with 0`,
    );
  }
  const rotated = rows.subarray(0, 3 * plane);
  const upright = rows.subarray(2 * 3 * plane, 3 * 3 * plane);
  assert.notDeepEqual(rotated, upright, 'item 0 was turned');
});

test('ocr steps - decode reads probabilities, checks their shape and honours requested outputs', async () => {
  const charset = loadCharset(assets.keysPath);
  const classes = charset.length;
  assert.equal(classes, 6625);
  // "Hi", then a blank-only line: one-hot rows H H blank i / blank blank blank blank
  const steps4 = [charset.indexOf('H'), charset.indexOf('H'), 0, charset.indexOf('i'), 0, 0, 0, 0];
  const probs = new Float32Array(2 * 4 * classes);
  steps4.forEach((c, t) => {
    probs[t * classes + c] = 1;
  });
  const [text, confidence] = await steps.dec.infer([fp32('probs', [2, 4, classes], probs)], ctx());
  assert.deepEqual(strings(text!), ['Hi', '']);
  assert.deepEqual([...floats(confidence!)], [1, 0]);
  const only = await steps.dec.infer([fp32('probs', [2, 4, classes], probs)], ctx(['text']));
  assert.deepEqual(
    only.map((t) => t.name),
    ['text'],
  );
  await rejectsWith(
    steps.dec.infer([fp32('probs', [1, 4, 100], new Float32Array(400))], ctx()),
    'INVALID_ARGUMENT',
    /input "probs": expected FP32 \[-1,-1,6625\], got FP32 \[1,4,100\]/,
  );
  await rejectsWith(
    steps.dec.infer([fp32('probs', [4, classes], new Float32Array(4 * classes))], ctx()),
    'INVALID_ARGUMENT',
    /got FP32 \[4,6625\]/,
  );
  await rejectsWith(
    steps.dec.infer(
      [{ ...fp32('probs', [1, 1, classes], new Float32Array(classes)), shape: [1, 2, classes] }],
      ctx(),
    ),
    'INVALID_ARGUMENT',
    /needs 53000 bytes, got 26500/,
  );
  await rejectsWith(
    steps.dec.infer([fp32('x', [1, 1, classes], new Float32Array(classes))], ctx()),
    'INVALID_ARGUMENT',
    /unexpected input "x"; the ocr decode step takes "probs" FP32/,
  );
  await rejectsWith(
    steps.dec.infer([fp32('probs', [1, 1, classes], new Float32Array(classes))], ctx(['words'])),
    'INVALID_ARGUMENT',
    /unknown output "words"/,
  );
});

test('ocr steps - bad options fail the load with MODEL_LOAD_FAILED naming them', async () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      OCR_STEP_MODULES.prepare,
      { rotateThreshold: 1.5 },
      /rotateThreshold must be a number in \[0, 1\], got 1.5/,
    ],
    [
      OCR_STEP_MODULES.prepare,
      { rotateThreshold: 'high' },
      /rotateThreshold must be a number in \[0, 1\], got "high"/,
    ],
    [OCR_STEP_MODULES.prepare, { maxWidthPx: 4 }, /maxWidthPx must be an integer of at least 8/],
    [
      OCR_STEP_MODULES.prepare,
      { rotateTreshold: 0.5 },
      /takes rotateThreshold, maxWidthPx; unknown option rotateTreshold/,
    ],
    [
      OCR_STEP_MODULES.preprocess,
      { size: 3 },
      /the ocr preprocess step takes no options; unknown option size/,
    ],
    [OCR_STEP_MODULES.decode, { keysPath: '/nonexistent/keys.txt' }, /ENOENT/],
  ];
  for (const [path, options, message] of cases) {
    await rejectsWith(load({ name: 'step', backend: 'js', path, options }), 'MODEL_LOAD_FAILED', message);
  }
});
