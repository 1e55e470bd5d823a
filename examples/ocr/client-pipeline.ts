/**
 * Reads the text of a line image through a running coordinator: orientation classifier, then
 * rotate if upside down, then recognizer and CTC decoding — preprocessing and decoding here,
 * both models on the workers. (A later step runs the whole chain server-side as a pipeline.)
 */

import type { InferenceClient } from '../../src/client/index.ts';
import { ctcGreedyDecode, type DecodedText } from './ctc.ts';
import { decodeOrientation } from './orientation.ts';
import { imageToClassifierInput, imageToRecognizerInput, rotate180 } from './preprocess.ts';

/** PaddleOCR's default: rotate only when the classifier is at least this sure. */
export const DEFAULT_ROTATE_THRESHOLD = 0.9;

export interface ReadLineResult extends DecodedText {
  angle: 0 | 180;
  angleConfidence: number;
}

export interface ReadLineOptions {
  recognizer?: string;
  classifier?: string;
  charset: string[];
  rotateThreshold?: number;
}

export async function readLine(
  client: InferenceClient,
  image: Buffer,
  options: ReadLineOptions,
): Promise<ReadLineResult> {
  const cls = await imageToClassifierInput(image);
  const clsResponse = await client.infer(options.classifier ?? 'ocr-cls', [
    { name: 'x', datatype: 'FP32', shape: cls.shape, data: cls.data },
  ]);
  const orientation = decodeOrientation(Float32Array.from(clsResponse.outputs[0]!.data as number[]));
  const upright =
    orientation.angle === 180 &&
    orientation.confidence >= (options.rotateThreshold ?? DEFAULT_ROTATE_THRESHOLD)
      ? await rotate180(image)
      : image;
  const rec = await imageToRecognizerInput(upright);
  const recResponse = await client.infer(options.recognizer ?? 'ocr-rec', [
    { name: 'x', datatype: 'FP32', shape: rec.shape, data: rec.data },
  ]);
  const out = recResponse.outputs[0]!;
  const [, steps, classes] = out.shape as [number, number, number];
  const decoded = ctcGreedyDecode(Float32Array.from(out.data as number[]), steps, classes, options.charset);
  return { ...decoded, angle: orientation.angle, angleConfidence: orientation.confidence };
}
