/**
 * A cached response as bytes: the key material's digest, the response meta, and the output
 * tensors' raw bytes — what the coordinator needs to answer as if a worker had.
 */

import { LRUCache } from 'lru-cache';
import { type Packr, Unpackr } from 'msgpackr';
import { createPackr, type InferResponseMeta, tensorsFromWire, tensorsToWire } from '../protocol/index.ts';
import type { Tensor } from '../tensor/index.ts';

export interface CachedResponse {
  meta: InferResponseMeta;
  outputs: Tensor[];
}

interface Stored {
  v: 1;
  d: Uint8Array;
  m: InferResponseMeta;
  b: Uint8Array[];
  /** Expiry, ms since the epoch: kept in the entry so it holds in every tier it is copied to. */
  x?: number;
}

/** An entry's bytes decoded once, for the next hit on the same bytes. */
interface Decoded {
  digest: Buffer;
  expiresAtMs: number | undefined;
  response: CachedResponse;
  /** What keeping it may pin, bytes (an estimate: see DECODED_MEMO_BYTES). */
  size: number;
}

/**
 * What the decoded-entry memo may pin, bytes: the entry's bytes (the memo holds them even once
 * the store has let them go), the decoded outputs (msgpackr copies them out of the entry) and
 * their JSON text, kept beside them by the HTTP front door (src/api/kserve.ts), reckoned at 5×
 * the outputs' bytes (FP32 as decimal text). None of it is counted by the store's own limit,
 * hence a budget of its own; an entry over a sixteenth of it is decoded per hit, as before.
 */
export const DECODED_MEMO_BYTES = 16 * 1024 * 1024;

export class EntryCodec {
  readonly #packr: Packr = createPackr();
  readonly #unpackr = new Unpackr({ moreTypes: true, useRecords: false, mapsAsObjects: true });
  /**
   * The memory tier hands back the same bytes on every hit, so the entries hit most are decoded
   * once and their response reused, outputs included (nothing downstream writes to a result's
   * tensors or meta). Keyed by the bytes object: a tier that reads a fresh copy each time (SQLite,
   * Redis) decodes each time, until the copy is promoted into memory.
   */
  readonly #decoded = new LRUCache<Uint8Array, Decoded>({
    maxSize: DECODED_MEMO_BYTES,
    sizeCalculation: (d) => d.size,
  });

  encode(digest: Uint8Array, response: CachedResponse, expiresAtMs?: number): Uint8Array {
    const { headers, attachments } = tensorsToWire(response.outputs);
    const stored: Stored = {
      v: 1,
      d: digest,
      m: { ...response.meta, outputs: headers },
      b: attachments,
      ...(expiresAtMs === undefined ? {} : { x: expiresAtMs }),
    };
    return this.#packr.pack(stored);
  }

  /**
   * The response, or undefined when the bytes are not an entry for this digest (collision, old
   * format, damage) or the entry has expired (a tier may have kept a copy longer than its TTL).
   */
  decode(bytes: Uint8Array, digest: Uint8Array, nowMs = Date.now()): CachedResponse | undefined {
    const known = this.#decoded.get(bytes);
    if (known) {
      if (!known.digest.equals(digest)) return undefined;
      return known.expiresAtMs !== undefined && known.expiresAtMs <= nowMs ? undefined : known.response;
    }
    let stored: Stored;
    try {
      stored = this.#unpackr.unpack(bytes) as Stored;
    } catch {
      return undefined;
    }
    if (stored?.v !== 1 || !(stored.d instanceof Uint8Array)) return undefined;
    const storedDigest = Buffer.from(stored.d);
    if (!storedDigest.equals(digest)) return undefined;
    if (typeof stored.x === 'number' && stored.x <= nowMs) return undefined;
    let response: CachedResponse;
    try {
      response = { meta: stored.m, outputs: tensorsFromWire(stored.m.outputs, stored.b) };
    } catch {
      return undefined;
    }
    let size = bytes.byteLength + 256;
    for (const t of response.outputs) size += 6 * t.data.byteLength;
    if (size <= DECODED_MEMO_BYTES / 16)
      this.#decoded.set(bytes, {
        digest: storedDigest,
        expiresAtMs: typeof stored.x === 'number' ? stored.x : undefined,
        response,
        size,
      });
    return response;
  }
}
