/**
 * The `ocr-line` pipeline's three js steps as functions from tensors to tensors. The js-backend
 * modules (`preprocess.ts`, `prepare.ts`, `decode.ts` beside this file) and the in-process
 * reference ({@link readLinesInProcess}) both run exactly these, so the two agree bit for bit.
 *
 *   image BYTES [N] ─preprocess→ x FP32 [N,3,48,192] ─classifier→ FP32 [N,2]
 *   image + cls ─prepare→ x FP32 [N,3,48,W], angle INT32 [N] ─recognizer→ FP32 [N,W/8,C]
 *   probs ─decode→ text BYTES [N], confidence FP32 [N]
 *
 * Trade-off: prepare pads every row to the widest line of its batch, as PaddleOCR does (without
 * PaddleOCR's 320 px floor), so one recognizer run serves the batch; a line's recognizer input,
 * and so in rare cases its text, depends on what it was batched with. The image travels to
 * prepare a second time rather than as a decoded tensor: encoded bytes are far smaller.
 */

import { fileURLToPath } from 'node:url';
import type { Tensor, TensorSpec } from '../../../src/tensor/index.ts';
import { DEFAULT_ROTATE_THRESHOLD } from '../client-pipeline.ts';
import { ctcGreedyDecodeBatch } from '../ctc.ts';
import { decodeOrientation } from '../orientation.ts';
import {
  CLS_HEIGHT_PX,
  CLS_WIDTH_PX,
  DEFAULT_REC_HEIGHT_PX,
  DEFAULT_REC_MAX_WIDTH_PX,
  imageToClassifierInput,
  imageToRecognizerInput,
  MIN_REC_WIDTH_PX,
  rotate180,
} from '../preprocess.ts';
import { mapImages } from './images.ts';
import {
  fp32Tensor,
  int32Tensor,
  invalidArgument,
  pickInputs,
  readBytesElements,
  readFp32,
  stringsTensor,
} from './tensors.ts';

/** Absolute paths of the three js-backend step modules, for a model config's `path`. */
export const OCR_STEP_MODULES = Object.freeze({
  preprocess: fileURLToPath(new URL('./preprocess.ts', import.meta.url)),
  prepare: fileURLToPath(new URL('./prepare.ts', import.meta.url)),
  decode: fileURLToPath(new URL('./decode.ts', import.meta.url)),
});

/** preprocess takes `image`: N encoded PNG/JPEG text-line images. */
export const PREPROCESS_INPUTS: readonly TensorSpec[] = [{ name: 'image', datatype: 'BYTES', shape: [-1] }];
/** preprocess gives `x`: the angle classifier's input, one row per image. */
export const PREPROCESS_OUTPUTS: readonly TensorSpec[] = [
  { name: 'x', datatype: 'FP32', shape: [-1, 3, CLS_HEIGHT_PX, CLS_WIDTH_PX] },
];
/** prepare takes `image` (as preprocess) and `cls`: the classifier's softmax, [P(0°), P(180°)] per image. */
export const PREPARE_INPUTS: readonly TensorSpec[] = [
  { name: 'image', datatype: 'BYTES', shape: [-1] },
  { name: 'cls', datatype: 'FP32', shape: [-1, 2] },
];
/** prepare gives `x` (the recognizer's input, padded to the widest line) and `angle` (0 or 180, as applied). */
export const PREPARE_OUTPUTS: readonly TensorSpec[] = [
  { name: 'x', datatype: 'FP32', shape: [-1, 3, DEFAULT_REC_HEIGHT_PX, -1] },
  { name: 'angle', datatype: 'INT32', shape: [-1] },
];

/** decode takes `probs`: the recognizer's softmax [N, T, classes]. */
export function decodeInputs(classes: number): TensorSpec[] {
  return [{ name: 'probs', datatype: 'FP32', shape: [-1, -1, classes] }];
}
/** decode gives `text` (UTF-8) and `confidence` (mean probability of the kept characters, 0 for ''). */
export const DECODE_OUTPUTS: readonly TensorSpec[] = [
  { name: 'text', datatype: 'BYTES', shape: [-1] },
  { name: 'confidence', datatype: 'FP32', shape: [-1] },
];

/** Options of the prepare step (the `options` of its model config). */
export interface PrepareOptions {
  /**
   * Rotate a line by 180° when the classifier says 180° with at least this probability, in
   * [0, 1]. Default {@link DEFAULT_ROTATE_THRESHOLD} (0.9, PaddleOCR's `cls_thresh`).
   */
  rotateThreshold: number;
  /** Widest recognizer input row, in pixels; wider lines are squeezed. Default {@link DEFAULT_REC_MAX_WIDTH_PX} (960). */
  maxWidthPx: number;
}

/**
 * Checks raw prepare options (from a model config) and fills in defaults.
 *
 * @throws {RangeError} an unknown option or an out-of-range value, naming it
 */
export function resolvePrepareOptions(raw: Readonly<Record<string, unknown>> = {}): PrepareOptions {
  rejectUnknownOptions('prepare', raw, ['rotateThreshold', 'maxWidthPx']);
  const rotateThreshold = raw['rotateThreshold'] ?? DEFAULT_ROTATE_THRESHOLD;
  if (typeof rotateThreshold !== 'number' || !(rotateThreshold >= 0 && rotateThreshold <= 1)) {
    throw new RangeError(
      `rotateThreshold must be a number in [0, 1], got ${JSON.stringify(rotateThreshold)}`,
    );
  }
  const maxWidthPx = raw['maxWidthPx'] ?? DEFAULT_REC_MAX_WIDTH_PX;
  if (typeof maxWidthPx !== 'number' || !Number.isInteger(maxWidthPx) || maxWidthPx < MIN_REC_WIDTH_PX) {
    throw new RangeError(
      `maxWidthPx must be an integer of at least ${MIN_REC_WIDTH_PX} (pixels), got ${JSON.stringify(maxWidthPx)}`,
    );
  }
  return { rotateThreshold, maxWidthPx };
}

/** @throws {RangeError} `raw` has a key not in `known` */
export function rejectUnknownOptions(
  step: string,
  raw: Readonly<Record<string, unknown>>,
  known: readonly string[],
): void {
  const unknown = Object.keys(raw).filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    const takes = known.length === 0 ? 'takes no options' : `takes ${known.join(', ')}`;
    throw new RangeError(
      `the ocr ${step} step ${takes}; unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`,
    );
  }
}

function readImages(inputs: Record<string, Tensor>): Buffer[] {
  const images = readBytesElements(inputs['image']!);
  if (images.length === 0) throw invalidArgument('input "image": expected at least one image, got none');
  return images;
}

/**
 * preprocess: `image` BYTES [N] → `x` FP32 [N,3,48,192], each image resized to height 48 and
 * padded to 192 as the angle classifier expects.
 *
 * @throws {InfergridError} INVALID_ARGUMENT: wrong inputs, or an image that is empty, not
 *   PNG/JPEG, undecodable or larger than MAX_INPUT_PIXELS (the message names its index)
 */
export async function preprocessStep(inputs: readonly Tensor[], signal?: AbortSignal): Promise<Tensor[]> {
  const images = readImages(pickInputs('ocr preprocess step', inputs, PREPROCESS_INPUTS));
  const rows = await mapImages(images, (image) => imageToClassifierInput(image));
  signal?.throwIfAborted();
  const rowLength = 3 * CLS_HEIGHT_PX * CLS_WIDTH_PX;
  const x = new Float32Array(rows.length * rowLength);
  rows.forEach((row, i) => {
    x.set(row.data, i * rowLength);
  });
  return [fp32Tensor('x', [rows.length, 3, CLS_HEIGHT_PX, CLS_WIDTH_PX], x)];
}

/**
 * prepare: `image` BYTES [N] and `cls` FP32 [N,2] → `x` FP32 [N,3,48,W] and `angle` INT32 [N].
 * A line is rotated by 180° when the classifier's 180° probability is at least
 * `rotateThreshold`; then resized to height 48 (width ≤ `maxWidthPx`) and right-padded with 0
 * to W, the widest line of the batch.
 *
 * @throws {InfergridError} INVALID_ARGUMENT: wrong inputs, `cls` rows not matching the images,
 *   or a bad image (as {@link preprocessStep})
 */
export async function prepareStep(
  inputs: readonly Tensor[],
  options: PrepareOptions,
  signal?: AbortSignal,
): Promise<Tensor[]> {
  const picked = pickInputs('ocr prepare step', inputs, PREPARE_INPUTS);
  const images = readImages(picked);
  const cls = picked['cls']!;
  if (cls.shape[0] !== images.length) {
    throw invalidArgument(
      `input "cls": expected FP32 [${images.length},2], one row per image, got FP32 [${cls.shape.join(',')}] for ${images.length} images`,
      { input: 'cls' },
    );
  }
  const probs = readFp32(cls);
  // Compared in float32, as the probabilities are: FP32 0.9 is 0.89999998, below the double 0.9.
  const threshold = Math.fround(options.rotateThreshold);
  const angles = Int32Array.from(images, (_, i) => {
    const { angle, confidence } = decodeOrientation(probs, 2 * i);
    return angle === 180 && confidence >= threshold ? 180 : 0;
  });
  const lines = await mapImages(images, async (image, i) =>
    imageToRecognizerInput(angles[i] === 180 ? await rotate180(image) : image, {
      height: DEFAULT_REC_HEIGHT_PX,
      maxWidth: options.maxWidthPx,
    }),
  );
  signal?.throwIfAborted();
  const height = DEFAULT_REC_HEIGHT_PX;
  const width = lines.reduce((widest, l) => Math.max(widest, l.shape[3]), MIN_REC_WIDTH_PX);
  const x = new Float32Array(lines.length * 3 * height * width);
  lines.forEach((line, i) => {
    // Row by row into the wider batch row; the rest stays 0, PaddleOCR's padding value.
    const lineWidth = line.shape[3];
    for (let r = 0; r < 3 * height; r++) {
      x.set(line.data.subarray(r * lineWidth, (r + 1) * lineWidth), (i * 3 * height + r) * width);
    }
  });
  return [fp32Tensor('x', [lines.length, 3, height, width], x), int32Tensor('angle', [lines.length], angles)];
}

/**
 * decode: `probs` FP32 [N,T,C] → `text` BYTES [N] (UTF-8) and `confidence` FP32 [N], by CTC
 * greedy decoding against `charset` (C must equal its length).
 *
 * @throws {InfergridError} INVALID_ARGUMENT: wrong input name, datatype or shape
 */
export function decodeStep(inputs: readonly Tensor[], charset: readonly string[]): Tensor[] {
  const probs = pickInputs('ocr decode step', inputs, decodeInputs(charset.length))['probs']!;
  const [items, steps, classes] = probs.shape as [number, number, number];
  const decoded = ctcGreedyDecodeBatch(readFp32(probs), [items, steps, classes], charset);
  return [
    stringsTensor(
      'text',
      decoded.map((d) => d.text),
    ),
    fp32Tensor(
      'confidence',
      [items],
      Float32Array.from(decoded, (d) => d.confidence),
    ),
  ];
}
