/**
 * The `ocr-line` pipeline in one process: the same step functions the js-backend modules run,
 * chained through the caller's two models. It is the reference a distributed pipeline's result
 * must equal, and a way to read lines without a coordinator.
 */

import type { Tensor } from '../../../src/tensor/index.ts';
import {
  type PrepareOptions,
  decodeStep,
  prepareStep,
  preprocessStep,
  resolvePrepareOptions,
} from './line-steps.ts';
import { bytesTensor, fp32Tensor, readBytesElements, readFp32 } from './tensors.ts';

/** A float32 tensor body with its shape. */
export interface Fp32Batch {
  data: Float32Array;
  shape: number[];
}

/** The two models of the pipeline, however the caller runs them. */
export interface OcrLineModels {
  /** Runs the angle classifier on `x` [N,3,48,192]; resolves with its softmax [N,2], row-major. */
  cls(x: Fp32Batch): Promise<Float32Array>;
  /** Runs the recognizer on `x` [N,3,48,W]; resolves with its softmax [N,T,C]. */
  rec(x: Fp32Batch): Promise<Fp32Batch>;
}

/** Options of {@link readLinesInProcess}. */
export interface InProcessOptions extends Partial<PrepareOptions> {
  /** Class table from `loadCharset`, as the decode step loads it. */
  charset: readonly string[];
}

/** What the pipeline says about one line. */
export interface OcrLineResult {
  text: string;
  /** Mean probability of the kept characters, as FP32 (0 for an empty text). */
  confidence: number;
  /** Rotation applied before recognition. */
  angle: 0 | 180;
}

/**
 * Reads N text-line images as one batch, as the pipeline does: preprocess → `models.cls` →
 * prepare → `models.rec` → decode.
 *
 * @throws {InfergridError} INVALID_ARGUMENT for a bad image or a model output of the wrong size
 * @throws {RangeError} a bad option
 */
export async function readLinesInProcess(
  images: readonly Uint8Array[],
  models: OcrLineModels,
  options: InProcessOptions,
): Promise<OcrLineResult[]> {
  const { charset, ...rest } = options;
  const prepareOptions = resolvePrepareOptions(rest);
  const image = bytesTensor('image', images);
  const [clsInput] = await preprocessStep([image]);
  const cls = await models.cls(asBatch(clsInput!));
  const [recInput, angle] = await prepareStep(
    [image, fp32Tensor('cls', [images.length, 2], cls)],
    prepareOptions,
  );
  const probs = await models.rec(asBatch(recInput!));
  const [text, confidence] = decodeStep([fp32Tensor('probs', probs.shape, probs.data)], charset);
  const texts = readBytesElements(text!).map((b) => b.toString('utf8'));
  const confidences = readFp32(confidence!);
  const angles = new Int32Array(angle!.data.slice().buffer);
  return texts.map((t, i) => ({ text: t, confidence: confidences[i]!, angle: angles[i] === 180 ? 180 : 0 }));
}

/** Reads one text-line image; see {@link readLinesInProcess}. */
export async function readLineInProcess(
  image: Uint8Array,
  models: OcrLineModels,
  options: InProcessOptions,
): Promise<OcrLineResult> {
  const [result] = await readLinesInProcess([image], models, options);
  return result!;
}

function asBatch(t: Tensor): Fp32Batch {
  return { data: readFp32(t), shape: [...t.shape] };
}
