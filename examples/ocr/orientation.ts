/** Reads the PaddleOCR text-line angle classifier's `[N, 2]` output (label 0 = 0°, label 1 = 180°). */

/** The classifier's verdict on one text line. */
export interface Orientation {
  angle: 0 | 180;
  /** Probability of the chosen angle, in [0, 1]. */
  confidence: number;
}

/**
 * Picks the likelier angle of one item of the classifier output. PaddleOCR only rotates a line
 * when the angle is 180 and the confidence exceeds its `cls_thresh` (0.9); applying such a
 * threshold is the caller's decision.
 *
 * @param probs the whole `[N, 2]` softmax output
 * @param offset index into `probs` (in elements, not items) where the item starts: `2 * i` for
 *   item i. Default 0.
 */
export function decodeOrientation(probs: Float32Array, offset = 0): Orientation {
  if (offset < 0 || offset + 2 > probs.length) {
    throw new RangeError(
      `probabilities hold ${probs.length} values, too few for 2 classes at offset ${offset}`,
    );
  }
  const upright = probs[offset]!;
  const flipped = probs[offset + 1]!;
  return flipped > upright ? { angle: 180, confidence: flipped } : { angle: 0, confidence: upright };
}
