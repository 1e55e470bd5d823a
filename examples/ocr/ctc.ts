/**
 * CTC greedy decoding of the PaddleOCR recognizer's output, as PaddleOCR's `CTCLabelDecode` does it:
 * argmax per time step, collapse repeats, drop blanks. Greedy decoding is what PaddleOCR ships for
 * this model; beam search would cost far more for no measured gain on printed text.
 */
import { readFileSync } from 'node:fs';

/** Class index of the CTC blank in PaddleOCR recognizers. */
export const CTC_BLANK_INDEX = 0;

/** One decoded text line. */
export interface DecodedText {
  text: string;
  /** Mean of the winning probability of each kept character, in [0, 1]; 0 when `text` is empty. */
  confidence: number;
}

/**
 * Loads a PaddleOCR character list (one character per line) as the recognizer's class table:
 * index 0 is the blank `''`, then each line in order, then `' '` (PaddleOCR's `use_space_char`).
 * A trailing newline, CRLF line ends and a UTF-8 BOM are tolerated; other whitespace is kept,
 * since a line may itself be a whitespace character. `ppocr_keys_v1.txt` gives 6625 entries.
 */
export function loadCharset(keysPath: string): string[] {
  const lines = readFileSync(keysPath, 'utf8')
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  return ['', ...lines, ' '];
}

/**
 * Greedy-decodes one item of a `[N, T, C]` probability tensor (already softmaxed).
 *
 * @param probs the whole output tensor, row-major
 * @param steps T, the number of time steps of one item
 * @param classes C, the number of classes; must equal `charset.length`
 * @param charset class table from {@link loadCharset}
 * @param offset index into `probs` (in elements, not items) where the item starts:
 *   `i * steps * classes` for item i. Default 0.
 */
export function ctcGreedyDecode(
  probs: Float32Array,
  steps: number,
  classes: number,
  charset: readonly string[],
  offset = 0,
): DecodedText {
  if (charset.length !== classes) {
    throw new RangeError(`charset has ${charset.length} entries but the model outputs ${classes} classes`);
  }
  if (offset < 0 || offset + steps * classes > probs.length) {
    throw new RangeError(
      `probabilities hold ${probs.length} values, too few for ${steps} steps x ${classes} classes at offset ${offset}`,
    );
  }
  let text = '';
  let confidenceSum = 0;
  let kept = 0;
  let previous = -1;
  for (let t = 0; t < steps; t++) {
    const row = offset + t * classes;
    let best = 0;
    let bestProb = probs[row]!;
    for (let c = 1; c < classes; c++) {
      const p = probs[row + c]!;
      if (p > bestProb) {
        best = c;
        bestProb = p;
      }
    }
    if (best !== CTC_BLANK_INDEX && best !== previous) {
      text += charset[best];
      confidenceSum += bestProb;
      kept++;
    }
    previous = best;
  }
  return { text, confidence: kept === 0 ? 0 : confidenceSum / kept };
}

/** Greedy-decodes every item of a `[N, T, C]` probability tensor; see {@link ctcGreedyDecode}. */
export function ctcGreedyDecodeBatch(
  probs: Float32Array,
  shape: readonly [number, number, number],
  charset: readonly string[],
): DecodedText[] {
  const [items, steps, classes] = shape;
  if (probs.length !== items * steps * classes) {
    throw new RangeError(`probabilities hold ${probs.length} values, expected [${shape.join(', ')}]`);
  }
  const results: DecodedText[] = [];
  for (let i = 0; i < items; i++) {
    results.push(ctcGreedyDecode(probs, steps, classes, charset, i * steps * classes));
  }
  return results;
}
