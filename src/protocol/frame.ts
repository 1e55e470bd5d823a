/**
 * The frame: the unit of the RPC byte stream.
 *
 *   offset  size  field
 *   0       4     frameLength   u32 LE, bytes after this field
 *   4       1     kind          MESSAGE_KIND code
 *   5       1     flags         FRAME_FLAG bits
 *   6       2     attachments   u16 LE, count of binary attachments
 *   8       4     requestId     u32 LE, 0 for connection-level messages
 *   12      4     metaLength    u32 LE
 *   16      4×n   attachment byte lengths, u32 LE each
 *   ..            meta          msgpack
 *   ..            zero padding to a multiple of 8 (from the frame's first byte)
 *   ..            attachments   raw bytes, each followed by zero padding to a multiple of 8
 *
 * Tensor bytes ride as attachments rather than inside the msgpack so that they are written
 * with writev straight from the caller's buffers and read back as views of the received
 * chunk, never re-encoded. Every attachment starts 8-byte aligned relative to the frame, so
 * a frame that starts aligned in memory (always, when it was assembled from several chunks)
 * gives typed-array views of FP64/INT64/FP32 tensors without a copy. The lengths in the header,
 * padded, must add up to frameLength exactly, which catches most corruption before msgpack
 * sees it.
 */

import { Packr } from 'msgpackr';
import { InfergridError } from '../errors.ts';

export const FRAME_HEADER_BYTES = 16;
/** Default hard limit on one frame, prefix included. */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024;
export const MAX_ATTACHMENTS = 0xffff;
/** Attachments start at multiples of this, counted from the frame's first byte. */
export const FRAME_ALIGN_BYTES = 8;
const ZEROS = new Uint8Array(FRAME_ALIGN_BYTES);

/** n rounded up to a multiple of FRAME_ALIGN_BYTES. */
export function alignFrameOffset(n: number): number {
  return (n + FRAME_ALIGN_BYTES - 1) & ~(FRAME_ALIGN_BYTES - 1);
}

export interface Frame {
  kind: number;
  flags: number;
  requestId: number;
  meta: unknown;
  attachments: Uint8Array[];
}

/** moreTypes keeps typed arrays typed; records off so any msgpack peer can read the meta. */
export function createPackr(): Packr {
  return new Packr({ moreTypes: true, useRecords: false, mapsAsObjects: true });
}

/**
 * Encodes a frame as a list of buffers for one writev: a header+meta buffer, then each
 * attachment as given (not copied). Throws FRAME_TOO_LARGE before anything is written.
 */
export function encodeFrame(packr: Packr, frame: Frame, maxFrameBytes: number): Uint8Array[] {
  const { attachments } = frame;
  if (attachments.length > MAX_ATTACHMENTS) {
    throw new InfergridError('FRAME_TOO_LARGE', `a frame carries at most ${MAX_ATTACHMENTS} attachments`);
  }
  const meta = packr.pack(frame.meta);
  const metaEnd = FRAME_HEADER_BYTES + 4 * attachments.length + meta.byteLength;
  const headBytes = alignFrameOffset(metaEnd);
  let total = headBytes;
  for (const a of attachments) total += alignFrameOffset(a.byteLength);
  if (total > maxFrameBytes) {
    throw new InfergridError(
      'FRAME_TOO_LARGE',
      `frame of ${total} bytes exceeds the limit of ${maxFrameBytes} bytes (rpc.maxFrameBytes)`,
      { details: { frameBytes: total, maxFrameBytes } },
    );
  }
  const head = Buffer.alloc(headBytes);
  head.writeUInt32LE(total - 4, 0);
  head.writeUInt8(frame.kind, 4);
  head.writeUInt8(frame.flags, 5);
  head.writeUInt16LE(attachments.length, 6);
  head.writeUInt32LE(frame.requestId >>> 0, 8);
  head.writeUInt32LE(meta.byteLength, 12);
  let offset = FRAME_HEADER_BYTES;
  for (const a of attachments) {
    head.writeUInt32LE(a.byteLength, offset);
    offset += 4;
  }
  head.set(meta, offset);
  const out: Uint8Array[] = [head];
  for (const a of attachments) {
    if (a.byteLength > 0) out.push(a);
    const pad = alignFrameOffset(a.byteLength) - a.byteLength;
    if (pad > 0) out.push(ZEROS.subarray(0, pad));
  }
  return out;
}

/** Encodes a frame into one contiguous buffer (tests and small control messages). */
export function encodeFrameToBuffer(packr: Packr, frame: Frame, maxFrameBytes: number): Buffer {
  return Buffer.concat(encodeFrame(packr, frame, maxFrameBytes));
}
