/**
 * js-backend module: the `ocr-line` pipeline's first step, run in its own process.
 *
 * - input  `image` BYTES [-1]: N encoded PNG or JPEG text-line images
 * - output `x` FP32 [-1,3,48,192]: the angle classifier's input, one row per image
 * - options: none
 *
 * A bad image (empty, not PNG/JPEG, undecodable, over 50 megapixels) fails the request with
 * INVALID_ARGUMENT naming its index. See `line-steps.ts`.
 */

import { type JsModel, selectOutputs } from '../../../src/backends/index.ts';
import { PREPROCESS_INPUTS, PREPROCESS_OUTPUTS, preprocessStep, rejectUnknownOptions } from './line-steps.ts';

export function load(options: Record<string, unknown> = {}): JsModel {
  rejectUnknownOptions('preprocess', options, []);
  return {
    inputs: PREPROCESS_INPUTS.map((s) => ({ ...s, shape: [...s.shape] })),
    outputs: PREPROCESS_OUTPUTS.map((s) => ({ ...s, shape: [...s.shape] })),
    async infer(inputs, ctx) {
      return selectOutputs(await preprocessStep(inputs, ctx.signal), ctx.outputs);
    },
  };
}
