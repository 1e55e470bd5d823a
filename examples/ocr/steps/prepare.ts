/**
 * js-backend module: the `ocr-line` pipeline's step between the angle classifier and the
 * recognizer.
 *
 * - inputs `image` BYTES [-1]: the same N images preprocess took;
 *          `cls` FP32 [-1,2]: the classifier's softmax, [P(0°), P(180°)] per image
 * - outputs `x` FP32 [-1,3,48,-1]: the recognizer's input, every row right-padded with 0 to the
 *          widest line of the batch; `angle` INT32 [-1]: 0 or 180, the rotation applied
 * - options `rotateThreshold` (number in [0, 1], default 0.9): rotate when P(180°) ≥ it;
 *          `maxWidthPx` (integer, default 960): wider lines are squeezed to it
 *
 * See `line-steps.ts`.
 */

import { type JsModel, selectOutputs } from '../../../src/backends/index.ts';
import { PREPARE_INPUTS, PREPARE_OUTPUTS, prepareStep, resolvePrepareOptions } from './line-steps.ts';

export function load(options: Record<string, unknown> = {}): JsModel {
  const resolved = resolvePrepareOptions(options);
  return {
    inputs: PREPARE_INPUTS.map((s) => ({ ...s, shape: [...s.shape] })),
    outputs: PREPARE_OUTPUTS.map((s) => ({ ...s, shape: [...s.shape] })),
    async infer(inputs, ctx) {
      return selectOutputs(await prepareStep(inputs, resolved, ctx.signal), ctx.outputs);
    },
  };
}
