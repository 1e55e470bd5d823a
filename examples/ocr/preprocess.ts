/**
 * Image → tensor preprocessing for the PaddleOCR recognizer and text-line angle classifier.
 *
 * Mirrors PaddleOCR's `resize_norm_img` (rec and cls): resize to a fixed height keeping the aspect
 * ratio, width `ceil(height * w / h)` squeezed to the maximum when wider, BGR channel order (cv2
 * decodes BGR), `(v / 255 - 0.5) / 0.5`, CHW layout, right padding with 0 (mid-grey once
 * normalised, as in PaddleOCR). Trade-off: sharp's (antialiased) bilinear kernel stands in for
 * cv2's INTER_LINEAR, so pixel values differ slightly from PaddleOCR's; on 144 rendered lines a
 * cv2-exact resize read no more of them exactly (124 vs 121, within noise of lanczos3's 125).
 */
import sharp from 'sharp';

/** Recognizer input height, in pixels (PP-OCRv4 `rec_image_shape` [3, 48, 320]). */
export const DEFAULT_REC_HEIGHT_PX = 48;
/**
 * Widest recognizer input, in pixels: 20 × the height, room for ~50 Latin characters. Wider lines
 * are squeezed to it, as PaddleOCR squeezes lines wider than its batch width.
 */
export const DEFAULT_REC_MAX_WIDTH_PX = 960;
/** Narrowest recognizer input, in pixels: one CTC time step of PP-OCRv4 covers 8 columns. */
export const MIN_REC_WIDTH_PX = 8;
/** Classifier input height, in pixels (PaddleOCR `cls_image_shape` [3, 48, 192]). */
export const CLS_HEIGHT_PX = 48;
/** Classifier input width, in pixels; every line is squeezed or padded to it. */
export const CLS_WIDTH_PX = 192;
/** Largest accepted input image, in pixels (width × height): 50 megapixels. */
export const MAX_INPUT_PIXELS = 50_000_000;

/** Why an image was refused. */
export type ImageDecodeReason = 'unreadable' | 'too-large';

/** The input bytes are not an image sharp can decode, or the image is too large to process. */
export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';
  readonly reason: ImageDecodeReason;

  constructor(reason: ImageDecodeReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** A float32 CHW tensor for one image, batch dimension included. */
export interface ImageTensor {
  data: Float32Array;
  shape: [1, 3, number, number];
}

/** Options of {@link imageToRecognizerInput}. */
export interface RecognizerInputOptions {
  /** Tensor height, in pixels. Default {@link DEFAULT_REC_HEIGHT_PX} (48). */
  height?: number;
  /** Widest resized image, in pixels; wider lines are squeezed. Default {@link DEFAULT_REC_MAX_WIDTH_PX} (960). */
  maxWidth?: number;
  /**
   * Tensor width, in pixels, e.g. the widest line of a batch: the image is right-padded with 0 up
   * to it (squeezed if wider). Default: the resized image width, no padding.
   */
  padToWidth?: number;
}

/**
 * Turns one text-line image (PNG, JPEG or anything else sharp reads) into the recognizer's input
 * `x` [1, 3, height, W]: EXIF orientation applied, alpha flattened onto white, resized to `height`
 * keeping the aspect ratio (width rounded up, at least {@link MIN_REC_WIDTH_PX}, at most
 * `maxWidth` and `padToWidth`), BGR, normalised to [-1, 1], then padded to `padToWidth`.
 *
 * @throws {ImageDecodeError} the image cannot be decoded or exceeds {@link MAX_INPUT_PIXELS}
 * @throws {RangeError} an option is not a positive integer
 */
export async function imageToRecognizerInput(
  image: Buffer,
  opts: RecognizerInputOptions = {},
): Promise<ImageTensor> {
  const height = positiveInteger('height', opts.height ?? DEFAULT_REC_HEIGHT_PX);
  const maxWidth = positiveInteger('maxWidth', opts.maxWidth ?? DEFAULT_REC_MAX_WIDTH_PX);
  const padToWidth =
    opts.padToWidth === undefined ? undefined : positiveInteger('padToWidth', opts.padToWidth);
  const size = await readSize(image);
  const widest = Math.min(maxWidth, padToWidth ?? maxWidth);
  const width = Math.min(widest, Math.max(MIN_REC_WIDTH_PX, Math.ceil((height * size.width) / size.height)));
  const rgb = await decodeResized(image, width, height);
  const tensorWidth = padToWidth ?? width;
  return { data: normalizeToChw(rgb, width, height, tensorWidth), shape: [1, 3, height, tensorWidth] };
}

/**
 * Turns one text-line image into the angle classifier's input `x` [1, 3, 48, 192]: resized to
 * height 48 keeping the aspect ratio, width `min(192, ceil(48 * w / h))`, BGR, normalised to
 * [-1, 1], right-padded with 0 to 192.
 *
 * @throws {ImageDecodeError} the image cannot be decoded or exceeds {@link MAX_INPUT_PIXELS}
 */
export async function imageToClassifierInput(image: Buffer): Promise<ImageTensor> {
  const size = await readSize(image);
  const width = Math.min(CLS_WIDTH_PX, Math.ceil((CLS_HEIGHT_PX * size.width) / size.height));
  const rgb = await decodeResized(image, width, CLS_HEIGHT_PX);
  return {
    data: normalizeToChw(rgb, width, CLS_HEIGHT_PX, CLS_WIDTH_PX),
    shape: [1, 3, CLS_HEIGHT_PX, CLS_WIDTH_PX],
  };
}

/**
 * Rotates an image by 180° (after applying its EXIF orientation) and returns it as PNG.
 *
 * @throws {ImageDecodeError} the image cannot be decoded or exceeds {@link MAX_INPUT_PIXELS}
 */
export async function rotate180(image: Buffer): Promise<Buffer> {
  await readSize(image);
  try {
    return await sharp(image, { limitInputPixels: MAX_INPUT_PIXELS, autoOrient: true })
      .rotate(180)
      .png()
      .toBuffer();
  } catch (err) {
    throw unreadable(err);
  }
}

/**
 * Normalises packed RGB uint8 pixels (HWC, `width * height * 3` bytes) into a float32 CHW tensor
 * body in BGR order with values `(v / 255 - 0.5) / 0.5`, each row right-padded with 0 up to
 * `padToWidth` columns. Returns `3 * height * padToWidth` values.
 *
 * @throws {RangeError} `raw` has the wrong length or `padToWidth < width`
 */
export function normalizeToChw(raw: Buffer, width: number, height: number, padToWidth: number): Float32Array {
  if (raw.length !== width * height * 3) {
    throw new RangeError(
      `expected ${width * height * 3} bytes of RGB for ${width}x${height}, got ${raw.length}`,
    );
  }
  if (padToWidth < width)
    throw new RangeError(`padToWidth ${padToWidth} is less than the image width ${width}`);
  const plane = height * padToWidth;
  const out = new Float32Array(3 * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const src = (y * width + x) * 3;
      const dst = y * padToWidth + x;
      // v / 127.5 - 1 is (v / 255 - 0.5) / 0.5; planes are B, G, R.
      out[dst] = raw[src + 2]! / 127.5 - 1;
      out[plane + dst] = raw[src + 1]! / 127.5 - 1;
      out[2 * plane + dst] = raw[src]! / 127.5 - 1;
    }
  }
  return out;
}

/** Reads the displayed size (EXIF orientation applied) from the header, refusing oversized images. */
async function readSize(image: Buffer): Promise<{ width: number; height: number }> {
  let size: { width: number; height: number };
  try {
    size = (await sharp(image, { limitInputPixels: false }).metadata()).autoOrient;
  } catch (err) {
    throw unreadable(err);
  }
  if (!(size.width > 0 && size.height > 0)) {
    throw new ImageDecodeError(
      'unreadable',
      'image could not be decoded: it has no pixels (expected PNG or JPEG)',
    );
  }
  if (size.width * size.height > MAX_INPUT_PIXELS) {
    throw new ImageDecodeError(
      'too-large',
      `image is too large: ${size.width}x${size.height} pixels exceeds the limit of ${MAX_INPUT_PIXELS}; ` +
        'crop the image to the text line or scale it down',
    );
  }
  return size;
}

/** Decodes, flattens onto white and resizes to exactly `width` x `height`, returning packed RGB. */
async function decodeResized(image: Buffer, width: number, height: number): Promise<Buffer> {
  let rgb: Buffer;
  let channels: number;
  try {
    const { data, info } = await sharp(image, { limitInputPixels: MAX_INPUT_PIXELS, autoOrient: true })
      .flatten({ background: '#ffffff' })
      .resize(width, height, { fit: 'fill', kernel: 'linear' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    rgb = data;
    channels = info.channels;
  } catch (err) {
    throw unreadable(err);
  }
  if (channels !== 3) {
    throw new ImageDecodeError('unreadable', `image decoded to ${channels} channels, expected 3 (RGB)`);
  }
  return rgb;
}

function unreadable(cause: unknown): ImageDecodeError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new ImageDecodeError('unreadable', `image could not be decoded: ${detail} (expected PNG or JPEG)`, {
    cause,
  });
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value <= 0)
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}
