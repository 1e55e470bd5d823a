/**
 * A cached response as bytes: the key material's digest, the response meta, and the output
 * tensors' raw bytes — what the coordinator needs to answer as if a worker had.
 */

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
  digest: Uint8Array;
  expiresAtMs: number | undefined;
  response: CachedResponse;
}

export class EntryCodec {
  readonly #packr: Packr = createPackr();
  readonly #unpackr = new Unpackr({ moreTypes: true, useRecords: false, mapsAsObjects: true });
  /**
   * The memory tier hands back the same bytes on every hit, so each entry is decoded once and its
   * response reused (outputs included: they are views of those bytes already, never written to).
   * Keyed weakly by the bytes, so an entry the store evicts leaves this too.
   */
  readonly #decoded = new WeakMap<Uint8Array, Decoded>();

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
      if (!Buffer.from(known.digest.buffer, known.digest.byteOffset, known.digest.byteLength).equals(digest))
        return undefined;
      return known.expiresAtMs !== undefined && known.expiresAtMs <= nowMs ? undefined : known.response;
    }
    let stored: Stored;
    try {
      stored = this.#unpackr.unpack(bytes) as Stored;
    } catch {
      return undefined;
    }
    if (stored?.v !== 1 || !(stored.d instanceof Uint8Array) || !Buffer.from(stored.d).equals(digest))
      return undefined;
    if (typeof stored.x === 'number' && stored.x <= nowMs) return undefined;
    let response: CachedResponse;
    try {
      response = { meta: stored.m, outputs: tensorsFromWire(stored.m.outputs, stored.b) };
    } catch {
      return undefined;
    }
    this.#decoded.set(bytes, {
      digest: stored.d,
      expiresAtMs: typeof stored.x === 'number' ? stored.x : undefined,
      response,
    });
    return response;
  }
}
