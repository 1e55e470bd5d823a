/**
 * Content codings of HTTP bodies: requests sent with `Content-Encoding: gzip | deflate` are
 * decoded while they are read, and responses are compressed when the client's
 * `Accept-Encoding` allows it and compressing pays.
 *
 * Trade-offs:
 * - A request body is decoded as a stream and counted as it comes: the compressed bytes against
 *   coordinator.bodyLimitBytes, the decoded ones against compression.maxDecompressedBytes. A
 *   body that decodes past the cap (a zip bomb) is refused at the first chunk over it, and the
 *   decoder is destroyed there: neither the memory nor the CPU of the whole output is spent.
 * - `deflate` is the zlib format (RFC 9110 §8.4.1.2; Triton's client sends zlib.compress), and
 *   a raw deflate stream, which some old clients send under that name, is read too: the first
 *   two bytes say which.
 * - Responses are compressed only where it pays, as bench/scenarios/compression.ts measured
 *   (docs/performance.md): text of at least compression.responseMinBytes, never binary tensor
 *   bodies (float bytes hardly shrink); which routes, and why not errors or event streams, is
 *   response-compression.ts's.
 */

import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { type Inflate, createGunzip, createInflate, createInflateRaw, deflate, gzip } from 'node:zlib';
import { InfergridError } from '../errors.ts';

/** Codings a request body may come in, and a response may go out in. */
export type ContentCoding = 'identity' | 'gzip' | 'deflate';
/** The compressed codings, in the server's order of preference. */
export const SUPPORTED_CODINGS = ['gzip', 'deflate'] as const;
export type CompressedCoding = (typeof SUPPORTED_CODINGS)[number];

/** The one coding of a request body per its Content-Encoding header; 415 for any other. */
export function requestCoding(header: string | string[] | undefined): ContentCoding {
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  const codings = text
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '' && c !== 'identity');
  if (codings.length === 0) return 'identity';
  const unsupported = codings.find((c) => c !== 'gzip' && c !== 'x-gzip' && c !== 'deflate');
  if (unsupported !== undefined || codings.length > 1) {
    throw new InfergridError(
      'UNSUPPORTED_MEDIA_TYPE',
      codings.length > 1 && unsupported === undefined
        ? `Content-Encoding ${JSON.stringify(text)} applies ${codings.length} codings; send the body compressed once, with gzip or deflate`
        : `Content-Encoding ${JSON.stringify(unsupported!.slice(0, 64))} is not supported; send the body as gzip, deflate (zlib) or identity (uncompressed)`,
      { details: { supportedEncodings: ['gzip', 'deflate', 'identity'] } },
    );
  }
  return codings[0] === 'deflate' ? 'deflate' : 'gzip';
}

/** Entries of an Accept-Encoding header read at most; a longer list is read that far. */
const MAX_ACCEPT_ENTRIES = 64;

/**
 * The coding to answer in, per the request's Accept-Encoding (RFC 9110 §12.5.3): the highest
 * q-value among gzip, deflate and identity wins, ties going to gzip, then deflate, then
 * identity; `*` stands for every coding not named; `x-gzip` is gzip; identity, unless named
 * (or `*`), comes after every coding the client named with a q above 0. No header (or an empty
 * one) means identity. When nothing is acceptable (`identity;q=0` and no coding we have), the
 * answer is identity all the same, as RFC 9110 allows.
 */
export function negotiateCoding(header: string | string[] | undefined): ContentCoding {
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text === undefined || text.trim() === '') return 'identity';
  const q = new Map<string, number>();
  for (const entry of text.split(',', MAX_ACCEPT_ENTRIES)) {
    const [rawName, ...params] = entry.split(';');
    let name = rawName!.trim().toLowerCase();
    if (name === '') continue;
    if (name === 'x-gzip') name = 'gzip';
    let weight = 1;
    for (const p of params) {
      const m = /^\s*q\s*=\s*(.*?)\s*$/i.exec(p);
      // a q-value that is not one (RFC 9110 §12.4.2: 0 to 1, three decimals at most) accepts nothing
      if (m) weight = /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(m[1]!) ? Number(m[1]) : 0;
    }
    // a coding named twice keeps its higher weight
    q.set(name, Math.max(weight, q.get(name) ?? 0));
  }
  const star = q.get('*');
  // identity named by nothing is acceptable, after any coding the client did name
  const weightOf = (coding: ContentCoding): number =>
    q.get(coding) ?? (star !== undefined ? star : coding === 'identity' ? Number.MIN_VALUE : 0);
  let best: ContentCoding = 'identity';
  let bestWeight = 0;
  for (const coding of [...SUPPORTED_CODINGS, 'identity'] as const) {
    const w = weightOf(coding);
    if (w > bestWeight) {
      best = coding;
      bestWeight = w;
    }
  }
  return best;
}

export interface ReadBodyOptions {
  coding: ContentCoding;
  /** Bytes the body may have on the wire (compressed, if it is). */
  wireLimitBytes: number;
  /** Bytes it may decode to (only with a compressed coding). */
  decodedLimitBytes: number;
}

/** What readBody's refusal left of the request's body: whether the rest was read to its end and dropped. */
export interface BodyRefusal {
  /** The rest of the body is being read and dropped, so the connection may carry the next request. */
  drained: boolean;
}

function tooLarge(message: string, details: Record<string, number>): InfergridError {
  return new InfergridError('PAYLOAD_TOO_LARGE', message, { details });
}

/** A zlib stream for a deflate body: zlib-wrapped when its first two bytes are a zlib header, else raw. */
function inflaterFor(first: Buffer): Inflate {
  const zlibHeader =
    first.length >= 2 && (first[0]! & 0x0f) === 8 && (first[0]! * 256 + first[1]!) % 31 === 0;
  return zlibHeader ? createInflate() : (createInflateRaw() as unknown as Inflate);
}

/**
 * Reads a request body from `payload`, decoding it per `coding`, and resolves with the decoded
 * bytes. Rejects with PAYLOAD_TOO_LARGE past either limit (at once when Content-Length already
 * says so), MALFORMED_REQUEST when the body does not decode, CANCELLED when the client goes
 * before the end. On a refusal the rest of the body is read and dropped, and `onRefused` is told
 * whether that is bounded (Content-Length within the wire limit), so the caller may keep the
 * connection for the next request.
 */
export function readBody(
  payload: Readable,
  contentLength: string | undefined,
  options: ReadBodyOptions,
  onRefused?: (refusal: BodyRefusal) => void,
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    new BodyReader(payload, contentLength, options, onRefused, resolve, reject).start();
  });
}

/**
 * One body's read. Prototype methods and listeners made as anonymous arrows: it runs for every
 * request, and tsx names every named closure with an Object.defineProperty (docs/performance.md).
 */
class BodyReader {
  readonly #chunks: Buffer[] = [];
  #wireBytes = 0;
  #decodedBytes = 0;
  #settled = false;
  #decoder: Inflate | undefined;
  /** deflate: the first bytes, until there are two to tell zlib from raw. */
  #pending: Buffer[] | undefined;
  readonly #bounded: boolean;
  readonly #announced: number | undefined;
  readonly #onData: (chunk: Buffer | string) => void;
  readonly #onEnd: () => void;
  readonly #onError: (err: Error) => void;
  readonly #onClose: () => void;

  constructor(
    readonly payload: Readable,
    contentLength: string | undefined,
    readonly options: ReadBodyOptions,
    readonly onRefused: ((refusal: BodyRefusal) => void) | undefined,
    readonly resolve: (body: Buffer) => void,
    readonly reject: (err: InfergridError) => void,
  ) {
    const announced = contentLength === undefined ? undefined : Number(contentLength);
    this.#announced = announced !== undefined && Number.isSafeInteger(announced) ? announced : undefined;
    this.#bounded = this.#announced !== undefined && this.#announced <= options.wireLimitBytes;
    this.#pending = options.coding === 'deflate' ? [] : undefined;
    this.#onData = (chunk) => this.#data(chunk);
    this.#onEnd = () => this.#end();
    this.#onError = (err) =>
      this.#fail(
        new InfergridError('CANCELLED', `the request body was cut short: ${err.message}`, { cause: err }),
      );
    this.#onClose = () => {
      // closed before its end: the client went away mid-body
      if (!(this.payload as Readable & { complete?: boolean }).complete)
        this.#fail(
          new InfergridError(
            'CANCELLED',
            'the client closed the connection before the end of the request body',
          ),
        );
    };
  }

  start(): void {
    if (this.#announced !== undefined && this.#announced > this.options.wireLimitBytes) {
      this.#fail(this.#wireTooLarge());
      return;
    }
    const p = this.payload;
    p.on('data', this.#onData);
    p.on('end', this.#onEnd);
    p.on('error', this.#onError);
    p.on('close', this.#onClose);
    p.resume();
  }

  #wireTooLarge(): InfergridError {
    const limit = this.options.wireLimitBytes;
    return tooLarge(
      `request body is larger than the limit of ${limit} bytes (coordinator.bodyLimitBytes); send big tensors in several requests or raise the limit`,
      { bodyLimitBytes: limit },
    );
  }

  #detach(): void {
    const p = this.payload;
    p.off('data', this.#onData);
    p.off('end', this.#onEnd);
    p.off('error', this.#onError);
    p.off('close', this.#onClose);
  }

  #fail(err: InfergridError): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#detach();
    this.#decoder?.destroy();
    this.#chunks.length = 0;
    // whatever is left is read and dropped: node parses the connection's next request after it
    this.payload.on('error', () => {});
    this.payload.resume();
    this.onRefused?.({ drained: this.#bounded });
    this.reject(err);
  }

  #finish(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#detach();
    const chunks = this.#chunks;
    this.resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#decodedBytes));
  }

  #decoded(chunk: Buffer): void {
    if (this.#settled) return;
    this.#decodedBytes += chunk.byteLength;
    const limit = this.options.decodedLimitBytes;
    if (this.#decodedBytes > limit) {
      this.#fail(
        tooLarge(
          `the ${this.options.coding} request body decodes to more than ${limit} bytes (coordinator.compression.maxDecompressedBytes); send less, or raise the limit`,
          { maxDecompressedBytes: limit },
        ),
      );
      return;
    }
    this.#chunks.push(chunk);
  }

  #startDecoder(first: Buffer): Inflate {
    const gzip = this.options.coding === 'gzip';
    const d = gzip ? (createGunzip() as unknown as Inflate) : inflaterFor(first);
    d.on('data', (chunk: Buffer) => this.#decoded(chunk));
    d.on('end', () => this.#finish());
    d.on('error', (err: Error) =>
      this.#fail(
        new InfergridError(
          'MALFORMED_REQUEST',
          `the request body is not valid ${gzip ? 'gzip' : 'deflate (zlib)'} data, as its Content-Encoding says: ${err.message}`,
          { cause: err },
        ),
      ),
    );
    // the decoder's buffer full: the socket waits, so a slow decode holds no more than that
    d.on('drain', () => {
      if (!this.#settled) this.payload.resume();
    });
    this.#decoder = d;
    return d;
  }

  #data(chunk: Buffer | string): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.#wireBytes += bytes.byteLength;
    if (this.#wireBytes > this.options.wireLimitBytes) {
      this.#fail(this.#wireTooLarge());
      return;
    }
    if (this.options.coding === 'identity') {
      this.#decodedBytes += bytes.byteLength;
      this.#chunks.push(bytes);
      return;
    }
    let input = bytes;
    let decoder = this.#decoder;
    if (!decoder) {
      const pending = this.#pending;
      if (pending) {
        pending.push(bytes);
        input = Buffer.concat(pending);
        if (input.byteLength < 2) return;
        this.#pending = undefined;
      }
      decoder = this.#startDecoder(input);
    }
    if (!decoder.write(input)) this.payload.pause();
  }

  #end(): void {
    if (this.#settled) return;
    if (this.options.coding === 'identity') {
      this.#finish();
      return;
    }
    const pending = this.#pending;
    if (pending !== undefined && pending.length > 0) {
      // a deflate body of one byte: not enough to tell zlib from raw, so tried as raw (and refused)
      const head = Buffer.concat(pending);
      this.#pending = undefined;
      this.#startDecoder(head).write(head);
    }
    // an empty body is empty whatever coding it names
    if (!this.#decoder) {
      this.#finish();
      return;
    }
    this.payload.off('close', this.#onClose);
    this.#decoder.end();
  }
}

const gzipAsync = promisify(gzip);
const deflateAsync = promisify(deflate);

/** `body` compressed in `coding` at zlib `level` (1 fastest … 9 smallest), off the event loop. */
export function compressBody(
  coding: CompressedCoding,
  body: string | Buffer,
  level: number,
): Promise<Buffer> {
  return coding === 'gzip' ? gzipAsync(body, { level }) : deflateAsync(body, { level });
}

/** Media types whose responses are worth compressing: text. Binary tensors and event streams are not. */
export function isCompressibleType(contentType: unknown): boolean {
  if (typeof contentType !== 'string') return false;
  const type = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return (
    type === 'application/json' ||
    type.endsWith('+json') ||
    type === 'application/javascript' ||
    type === 'image/svg+xml' ||
    (type.startsWith('text/') && type !== 'text/event-stream')
  );
}

/** A Vary header value with `Accept-Encoding` in it, once. */
export function varyWithAcceptEncoding(current: unknown): string {
  const text = Array.isArray(current) ? current.join(', ') : typeof current === 'string' ? current : '';
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.some((p) => p === '*' || p.toLowerCase() === 'accept-encoding')) return parts.join(', ');
  return [...parts, 'Accept-Encoding'].join(', ');
}
