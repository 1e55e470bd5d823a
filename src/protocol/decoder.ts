/**
 * Streaming frame decoder: accepts the byte stream split at any point (one byte at a time
 * included) and yields whole frames. A frame that fits in one received chunk is decoded as
 * views of that chunk; one split across chunks is assembled once, when its last byte arrives.
 *
 * Any error (oversize, unknown kind, inconsistent lengths, bad msgpack) is thrown as an
 * InfergridError and leaves the decoder failed: the caller closes that connection only.
 */

import { C1, type Packr } from 'msgpackr';
import { InfergridError } from '../errors.ts';
import { type Frame, FRAME_HEADER_BYTES, alignFrameOffset } from './frame.ts';
import { KIND_NAME, isMessageKind } from './kinds.ts';

export interface FrameDecoderOptions {
  /** Hard limit on one frame, its 4-byte length prefix included. */
  maxFrameBytes: number;
  packr: Packr;
}

export class FrameDecoder {
  #maxFrameBytes: number;
  /** What the limit is called in error messages. */
  #limitName = 'rpc.maxFrameBytes';
  readonly #packr: Packr;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Length of the frame being received (prefix included), once its prefix is known. */
  #need = 0;
  #failed: InfergridError | undefined;

  constructor(options: FrameDecoderOptions) {
    if (!Number.isInteger(options.maxFrameBytes) || options.maxFrameBytes < FRAME_HEADER_BYTES) {
      throw new RangeError(`maxFrameBytes must be an integer >= ${FRAME_HEADER_BYTES}`);
    }
    this.#maxFrameBytes = options.maxFrameBytes;
    this.#packr = options.packr;
  }

  /**
   * Changes the frame limit from the next frame on (a connection starts with a small one
   * until its peer has authenticated).
   */
  setMaxFrameBytes(maxFrameBytes: number, limitName = 'rpc.maxFrameBytes'): void {
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < FRAME_HEADER_BYTES) {
      throw new RangeError(`maxFrameBytes must be an integer >= ${FRAME_HEADER_BYTES}`);
    }
    this.#maxFrameBytes = maxFrameBytes;
    this.#limitName = limitName;
  }

  /** Bytes received but not yet part of a returned frame. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Feeds bytes; returns the frames they complete, in order. */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw this.#failed;
    const frames: Frame[] = [];
    if (chunk.byteLength === 0) return frames;
    this.#chunks.push(
      Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength),
    );
    this.#buffered += chunk.byteLength;
    try {
      for (;;) {
        if (this.#need === 0) {
          if (this.#buffered < 4) break;
          const length = this.#peekUInt32() + 4;
          if (length > this.#maxFrameBytes) {
            throw new InfergridError(
              'FRAME_TOO_LARGE',
              `peer announced a frame of ${length} bytes, over the limit of ${this.#maxFrameBytes} (${this.#limitName})`,
              { details: { frameBytes: length, maxFrameBytes: this.#maxFrameBytes } },
            );
          }
          if (length < FRAME_HEADER_BYTES) {
            throw new InfergridError('PROTOCOL_ERROR', `frame of ${length} bytes is shorter than its header`);
          }
          this.#need = length;
        }
        if (this.#buffered < this.#need) break;
        const bytes = this.#take(this.#need);
        this.#need = 0;
        frames.push(this.#parse(bytes));
      }
    } catch (err) {
      this.#failed = err instanceof InfergridError ? err : new InfergridError('PROTOCOL_ERROR', String(err));
      this.#chunks = [];
      this.#buffered = 0;
      throw this.#failed;
    }
    return frames;
  }

  #peekUInt32(): number {
    const first = this.#chunks[0]!;
    if (first.byteLength >= 4) return first.readUInt32LE(0);
    const four = Buffer.allocUnsafe(4);
    let filled = 0;
    for (const c of this.#chunks) {
      const n = Math.min(4 - filled, c.byteLength);
      c.copy(four, filled, 0, n);
      filled += n;
      if (filled === 4) break;
    }
    return four.readUInt32LE(0);
  }

  /** Removes and returns the next n bytes: a view when they lie in one chunk, else one copy. */
  #take(n: number): Buffer {
    this.#buffered -= n;
    const first = this.#chunks[0]!;
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[0]!;
      const k = Math.min(n - filled, c.byteLength);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.byteLength) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    return out;
  }

  #parse(bytes: Buffer): Frame {
    const kind = bytes.readUInt8(4);
    if (!isMessageKind(kind)) {
      throw new InfergridError('UNKNOWN_MESSAGE', `unknown message kind ${kind}`, { details: { kind } });
    }
    const flags = bytes.readUInt8(5);
    const count = bytes.readUInt16LE(6);
    const requestId = bytes.readUInt32LE(8);
    const metaLength = bytes.readUInt32LE(12);
    const lengthsEnd = FRAME_HEADER_BYTES + 4 * count;
    if (lengthsEnd > bytes.byteLength) {
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `${KIND_NAME[kind]} frame announces ${count} attachments that do not fit`,
      );
    }
    const lengths: number[] = [];
    let sum = alignFrameOffset(lengthsEnd + metaLength);
    for (let i = 0; i < count; i++) {
      const l = bytes.readUInt32LE(FRAME_HEADER_BYTES + 4 * i);
      lengths.push(l);
      sum += alignFrameOffset(l);
    }
    if (sum !== bytes.byteLength) {
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `${KIND_NAME[kind]} frame lengths are inconsistent: header says ${sum} bytes, frame has ${bytes.byteLength}`,
      );
    }
    let offset = lengthsEnd;
    let meta: unknown;
    try {
      meta = metaLength === 0 ? undefined : this.#packr.unpack(bytes.subarray(offset, offset + metaLength));
      // 0xc1 is never valid msgpack, but msgpackr returns a marker for it instead of throwing
      if (meta === C1) throw new Error('0xc1 is not a msgpack value');
    } catch (err) {
      throw new InfergridError('PROTOCOL_ERROR', `${KIND_NAME[kind]} frame has a corrupt msgpack body`, {
        cause: err,
      });
    }
    offset = alignFrameOffset(offset + metaLength);
    const attachments: Uint8Array[] = [];
    for (const l of lengths) {
      attachments.push(bytes.subarray(offset, offset + l));
      offset += alignFrameOffset(l);
    }
    return { kind, flags, requestId, meta, attachments };
  }
}
