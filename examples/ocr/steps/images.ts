/**
 * Per-image work for the `ocr-line` steps, with a client's bad image turned into INVALID_ARGUMENT
 * naming its index. Only PNG and JPEG are let through to the decoder (checked by signature):
 * that is the documented contract, and it keeps libvips' other loaders (SVG, TIFF, PDF, …) out
 * of reach of request bytes.
 */

import { ImageDecodeError } from '../preprocess.ts';
import { invalidArgument } from './tensors.ts';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_SIGNATURE = Buffer.from([0xff, 0xd8, 0xff]);
/** How many leading bytes a "not an image" message shows. */
const SHOWN_BYTES = 8;

/** Why one image of a batch was refused. */
interface ImageProblem {
  index: number;
  reason: 'empty' | 'not-png-or-jpeg' | 'unreadable' | 'too-large';
  message: string;
}

/** Checks that `image` looks like a PNG or JPEG before any decoder sees it. */
function checkSignature(image: Buffer, index: number): ImageProblem | undefined {
  if (image.byteLength === 0) {
    return { index, reason: 'empty', message: `image ${index} is empty (0 bytes); expected PNG or JPEG` };
  }
  const isPng = image.byteLength >= PNG_SIGNATURE.length && image.subarray(0, 8).equals(PNG_SIGNATURE);
  const isJpeg = image.byteLength >= JPEG_SIGNATURE.length && image.subarray(0, 3).equals(JPEG_SIGNATURE);
  if (isPng || isJpeg) return undefined;
  const head = [...image.subarray(0, SHOWN_BYTES)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  return {
    index,
    reason: 'not-png-or-jpeg',
    message: `image ${index} is not a PNG or JPEG (${image.byteLength} bytes starting ${head}); send the encoded file's bytes`,
  };
}

/** "image could not be decoded: …" → "image 3 could not be decoded: …". */
function fromDecodeError(err: ImageDecodeError, index: number): ImageProblem {
  const message = err.message.startsWith('image ')
    ? `image ${index} ${err.message.slice('image '.length)}`
    : `image ${index}: ${err.message}`;
  return { index, reason: err.reason, message };
}

/**
 * Runs `work` on every image concurrently (sharp works on libuv's thread pool) and returns the
 * results in order. Images that are empty, not PNG/JPEG, undecodable or too large fail the whole
 * batch with one INVALID_ARGUMENT naming the first bad image; `details.images` lists every one.
 * Any other error is a bug in the step and is rethrown as it is.
 *
 * @throws {InfergridError} INVALID_ARGUMENT for a client's bad image
 */
export async function mapImages<T>(
  images: readonly Buffer[],
  work: (image: Buffer, index: number) => Promise<T>,
): Promise<T[]> {
  const settled = await Promise.allSettled(
    images.map(async (image, index) => {
      const problem = checkSignature(image, index);
      if (problem) return problem;
      try {
        return { value: await work(image, index) };
      } catch (err) {
        if (err instanceof ImageDecodeError) return fromDecodeError(err, index);
        throw err;
      }
    }),
  );
  const problems: ImageProblem[] = [];
  const values: T[] = [];
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    if ('value' in s.value) values.push(s.value.value);
    else problems.push(s.value);
  }
  const first = problems[0];
  if (first) {
    const more =
      problems.length > 1
        ? ` (and ${problems.length - 1} more bad image${problems.length > 2 ? 's' : ''})`
        : '';
    throw invalidArgument(`${first.message}${more}`, {
      images: problems.map(({ index, reason }) => ({ index, reason })),
    });
  }
  return values;
}
