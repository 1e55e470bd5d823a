import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { crc32, deflateSync } from 'node:zlib';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import {
  ctcGreedyDecode,
  ctcGreedyDecodeBatch,
  decodeOrientation,
  ImageDecodeError,
  imageToClassifierInput,
  imageToRecognizerInput,
  loadCharset,
  normalizeToChw,
  resolveOcrAssets,
  rotate180,
} from '../../examples/ocr/index.ts';
import { renderTextLine } from '../fixtures/render-text.ts';

const CHARSET = ['', 'a', 'b', ' '];

/** One row per step: the named class gets `p`, the others share the rest evenly. */
function probsFor(winners: readonly number[], p = 0.9, classes = CHARSET.length): Float32Array {
  const probs = new Float32Array(winners.length * classes).fill((1 - p) / (classes - 1));
  winners.forEach((c, t) => {
    probs[t * classes + c] = p;
  });
  return probs;
}

function solidPng(width: number, height: number, background: string): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background } })
    .png()
    .toBuffer();
}

/** A PNG whose header claims `width` x `height` but whose pixel data is empty. */
function pngHeaderOnly(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey) is already 0
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const idat = chunk('IDAT', deflateSync(Buffer.alloc(0)));
  return Buffer.concat([signature, chunk('IHDR', ihdr), idat, chunk('IEND', Buffer.alloc(0))]);
}

test('ocr - ctc decode collapses repeats and drops blanks', () => {
  const { text } = ctcGreedyDecode(probsFor([0, 1, 1, 0, 2, 2, 2, 3, 1, 0]), 10, 4, CHARSET);
  assert.equal(text, 'ab a');
});

test('ocr - ctc decode keeps a repeated character split by a blank', () => {
  assert.equal(ctcGreedyDecode(probsFor([1, 0, 1, 1, 0, 1]), 6, 4, CHARSET).text, 'aaa');
});

test('ocr - ctc confidence is the mean max probability of kept characters, 0 when empty', () => {
  const probs = probsFor([1, 1, 0, 2]);
  probs[0 * 4 + 1] = 0.6; // first step of 'a' counts, its repeat does not
  probs[1 * 4 + 1] = 0.99;
  probs[3 * 4 + 2] = 0.8;
  const decoded = ctcGreedyDecode(probs, 4, 4, CHARSET);
  assert.equal(decoded.text, 'ab');
  assert.ok(Math.abs(decoded.confidence - (0.6 + 0.8) / 2) < 1e-6);
  assert.deepEqual(ctcGreedyDecode(probsFor([0, 0, 0]), 3, 4, CHARSET), { text: '', confidence: 0 });
});

test('ocr - ctc decode reads batch item i at offset i * steps * classes', () => {
  const probs = Float32Array.from([...probsFor([1, 0, 2]), ...probsFor([2, 3, 2], 0.7)]);
  assert.equal(ctcGreedyDecode(probs, 3, 4, CHARSET, 12).text, 'b b');
  const batch = ctcGreedyDecodeBatch(probs, [2, 3, 4], CHARSET);
  assert.deepEqual(
    batch.map((d) => d.text),
    ['ab', 'b b'],
  );
  assert.ok(Math.abs(batch[1]!.confidence - 0.7) < 1e-6);
});

test('ocr - ctc decode refuses a charset or shape that does not match the probabilities', () => {
  assert.throws(
    () => ctcGreedyDecode(probsFor([1]), 1, 4, ['', 'a']),
    /charset has 2 entries but the model outputs 4/,
  );
  assert.throws(() => ctcGreedyDecode(probsFor([1]), 2, 4, CHARSET), RangeError);
  assert.throws(() => ctcGreedyDecodeBatch(probsFor([1]), [2, 1, 4], CHARSET), RangeError);
});

test('ocr - loadCharset gives 6625 classes for ppocr_keys_v1: blank first, space last', () => {
  const charset = loadCharset(resolveOcrAssets().keysPath);
  assert.equal(charset.length, 6625);
  assert.equal(charset[0], '');
  assert.equal(charset.at(-1), ' ');
  assert.ok(charset.slice(1, -1).every((c) => c.length > 0 && !c.includes('\r')));
});

test('ocr - loadCharset handles CRLF and a trailing newline', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ocr-keys-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const crlf = join(dir, 'crlf.txt');
  writeFileSync(crlf, 'a\r\nb\r\n');
  assert.deepEqual(loadCharset(crlf), ['', 'a', 'b', ' ']);
  const bare = join(dir, 'bare.txt');
  writeFileSync(bare, 'a\nb');
  assert.deepEqual(loadCharset(bare), ['', 'a', 'b', ' ']);
});

test('ocr - decodeOrientation picks the likelier angle at the item offset', () => {
  const probs = Float32Array.from([0.97, 0.03, 0.2, 0.8]);
  assert.deepEqual(decodeOrientation(probs), { angle: 0, confidence: probs[0] });
  assert.deepEqual(decodeOrientation(probs, 2), { angle: 180, confidence: probs[3] });
  assert.throws(() => decodeOrientation(probs, 3), RangeError);
});

test('ocr - normalizeToChw maps white to 1 and black to -1 in BGR planes, padding with 0', () => {
  // 2x1 image: a white pixel then a pure red one, padded to 3 columns.
  const data = normalizeToChw(Buffer.from([255, 255, 255, 255, 0, 0]), 2, 1, 3);
  assert.deepEqual(Array.from(data), [1, -1, 0, 1, -1, 0, 1, 1, 0]);
  assert.throws(() => normalizeToChw(Buffer.alloc(5), 2, 1, 2), /expected 6 bytes/);
  assert.throws(
    () => normalizeToChw(Buffer.alloc(6), 2, 1, 1),
    /padToWidth 1 is less than the image width 2/,
  );
});

test('ocr - recognizer input is BGR: a pure red image gives B = G = -1 and R = 1', async () => {
  const { data, shape } = await imageToRecognizerInput(await solidPng(96, 48, '#ff0000'));
  assert.deepEqual(shape, [1, 3, 48, 96]);
  const plane = 48 * 96;
  assert.ok(data.subarray(0, 2 * plane).every((v) => v === -1));
  assert.ok(data.subarray(2 * plane).every((v) => v === 1));
});

test('ocr - recognizer input keeps the aspect ratio at height 48, rounding the width up', async () => {
  assert.deepEqual((await imageToRecognizerInput(await solidPng(101, 20, '#fff'))).shape, [1, 3, 48, 243]);
  assert.deepEqual((await imageToRecognizerInput(await solidPng(2, 40, '#fff'))).shape, [1, 3, 48, 8]);
  assert.deepEqual((await imageToRecognizerInput(await solidPng(5000, 10, '#fff'))).shape, [1, 3, 48, 960]);
  const custom = await imageToRecognizerInput(await solidPng(100, 50, '#fff'), { height: 32, maxWidth: 50 });
  assert.deepEqual(custom.shape, [1, 3, 32, 50]);
  await assert.rejects(imageToRecognizerInput(await solidPng(8, 8, '#fff'), { height: 0 }), RangeError);
});

test('ocr - recognizer input pads to padToWidth with 0 and squeezes wider lines', async () => {
  const white = await solidPng(100, 48, '#fff');
  const { data, shape } = await imageToRecognizerInput(white, { padToWidth: 130 });
  assert.deepEqual(shape, [1, 3, 48, 130]);
  for (const row of [0, 47, 48 * 3 - 1]) {
    assert.ok(data.subarray(row * 130, row * 130 + 100).every((v) => v === 1));
    assert.ok(data.subarray(row * 130 + 100, (row + 1) * 130).every((v) => v === 0));
  }
  const squeezed = await imageToRecognizerInput(white, { padToWidth: 64 });
  assert.deepEqual(squeezed.shape, [1, 3, 48, 64]);
  assert.ok(squeezed.data.every((v) => v === 1));
});

test('ocr - transparent pixels are flattened onto white', async () => {
  const clear = await sharp({ create: { width: 48, height: 48, channels: 4, background: '#00000000' } })
    .png()
    .toBuffer();
  assert.ok((await imageToRecognizerInput(clear)).data.every((v) => v === 1));
});

test('ocr - classifier input is 48x192, padded right with 0', async () => {
  const { data, shape } = await imageToClassifierInput(await solidPng(50, 24, '#fff'));
  assert.deepEqual(shape, [1, 3, 48, 192]);
  assert.ok(data.subarray(0, 100).every((v) => v === 1));
  assert.ok(data.subarray(100, 192).every((v) => v === 0));
  assert.deepEqual((await imageToClassifierInput(await solidPng(900, 30, '#fff'))).shape, [1, 3, 48, 192]);
});

test('ocr - unreadable or oversized images raise ImageDecodeError', async () => {
  await assert.rejects(imageToRecognizerInput(Buffer.from('not an image')), (err: unknown) => {
    assert.ok(err instanceof ImageDecodeError);
    assert.equal(err.reason, 'unreadable');
    assert.match(err.message, /^image could not be decoded: .*\(expected PNG or JPEG\)$/);
    assert.ok(err.cause instanceof Error);
    return true;
  });
  await assert.rejects(imageToClassifierInput(Buffer.alloc(0)), ImageDecodeError);
  await assert.rejects(rotate180(Buffer.from('GIF89a?')), ImageDecodeError);
  // The header parses but the pixels are missing: refused at decode.
  await assert.rejects(imageToRecognizerInput(pngHeaderOnly(100, 50)), { reason: 'unreadable' });
  // Refused from the header alone, before any pixel is decoded.
  await assert.rejects(imageToRecognizerInput(pngHeaderOnly(10_000, 6_000)), {
    name: 'ImageDecodeError',
    reason: 'too-large',
    message: /10000x6000 pixels exceeds the limit of 50000000/,
  });
});

test('ocr - rotate180 twice gives back the original pixels', async () => {
  const png = await renderTextLine('Ab');
  const turned = await rotate180(png);
  const raw = (image: Buffer) => sharp(image).toColourspace('srgb').raw().toBuffer();
  assert.notDeepEqual(await raw(turned), await raw(png));
  assert.deepEqual(await raw(await rotate180(turned)), await raw(png));
});

test('ocr - resolveOcrAssets finds the three model files and explains when they are missing', (t) => {
  const assets = resolveOcrAssets();
  for (const path of [assets.recognizerPath, assets.classifierPath, assets.keysPath]) {
    assert.ok(statSync(path).isFile(), path);
  }
  const dir = mkdtempSync(join(tmpdir(), 'ocr-assets-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.throws(() => resolveOcrAssets(dir), /OCR models not found/);
});

// End to end with the real PaddleOCR models.

const SESSION_OPTIONS = { intraOpNumThreads: 1, interOpNumThreads: 1 };
const assets = resolveOcrAssets();
const charset = loadCharset(assets.keysPath);
const recognizer = await ort.InferenceSession.create(assets.recognizerPath, SESSION_OPTIONS);
after(() => recognizer.release());
const classifier = await ort.InferenceSession.create(assets.classifierPath, SESSION_OPTIONS);
after(() => classifier.release());

const LINES: ReadonlyArray<{ text: string; fontFamily?: string }> = [
  { text: 'Hello World' },
  { text: 'infergrid 2026' },
  { text: 'The quick brown fox' },
  { text: 'OCR test 42' },
  { text: 'Jumps over 13 lazy dogs', fontFamily: 'DejaVu Serif' },
];

async function recognize(data: Float32Array, shape: readonly number[]) {
  const output = (await recognizer.run({ x: new ort.Tensor('float32', data, shape) }))['softmax_11.tmp_0']!;
  return ctcGreedyDecodeBatch(output.data as Float32Array, output.dims as [number, number, number], charset);
}

test('ocr - the recognizer reads rendered lines exactly, one at a time', async () => {
  for (const line of LINES) {
    const { data, shape } = await imageToRecognizerInput(await renderTextLine(line.text, line));
    const [decoded] = await recognize(data, shape);
    assert.equal(decoded!.text, line.text);
    assert.ok(decoded!.confidence > 0.9, `${line.text}: confidence ${decoded!.confidence}`);
  }
});

test('ocr - the recognizer reads a batch padded to its widest line', async () => {
  const images = await Promise.all(LINES.map((line) => renderTextLine(line.text, line)));
  const widths = await Promise.all(
    images.map(async (image) => (await imageToRecognizerInput(image)).shape[3]),
  );
  const padToWidth = Math.max(...widths);
  const inputs = await Promise.all(images.map((image) => imageToRecognizerInput(image, { padToWidth })));
  const batch = new Float32Array(inputs.length * inputs[0]!.data.length);
  for (const [i, input] of inputs.entries()) batch.set(input.data, i * input.data.length);
  const decoded = await recognize(batch, [inputs.length, 3, 48, padToWidth]);
  assert.deepEqual(
    decoded.map((d) => d.text),
    LINES.map((line) => line.text),
  );
});

test('ocr - the classifier tells an upright line from an upside-down one', async () => {
  // A short line (aspect ~5): every line is squeezed into 48x192 px, as PaddleOCR does, and the
  // classifier grows unsure of long ones (0.79 for a rotated 43-character pangram).
  const text = 'infergrid 2026';
  for (const [rotated, angle] of [
    [false, 0],
    [true, 180],
  ] as const) {
    const { data, shape } = await imageToClassifierInput(await renderTextLine(text, { rotate180: rotated }));
    const output = (await classifier.run({ x: new ort.Tensor('float32', data, shape) }))['softmax_0.tmp_0']!;
    const orientation = decodeOrientation(output.data as Float32Array);
    assert.equal(orientation.angle, angle);
    assert.ok(orientation.confidence > 0.99, `angle ${angle}: confidence ${orientation.confidence}`);
  }
});
