/**
 * The cache key of a request: SHA-256 over canonical bytes — model, resolved version, the
 * version's generation (a hash of its config and model files, so a reload never meets an old
 * answer), every input's name, datatype, shape and bytes (inputs in name order), the requested
 * outputs, and the request parameters that can change the result (every parameter but the engine's own,
 * in key order, each value with its type). Every field is length-prefixed, so no two different
 * requests share key material. The store key carries the first 128 bits; the full digest is
 * kept with the entry and compared on every hit, so a collision can never return another
 * request's result.
 */

// crypto.hash (one call, no Hash object) is Node 20.12 and later: package.json engines says so
import { createHash, hash as hashOnce, type Hash } from 'node:crypto';
import { ENGINE_PARAMETERS, type Parameters } from '../protocol/index.ts';
import type { Tensor } from '../tensor/index.ts';

// v2: dimensions are hashed as 64 bits (v1 hashed them as 32, so [2^32 + 1, 0] met [1, 0])
const MATERIAL_VERSION = 'infergrid-cache-key-v2';

export interface CacheKey {
  /** `<model>@<version>:<128-bit hex>`: the store key (its prefix names the model). */
  key: string;
  /** SHA-256 of the whole key material, verified on a hit. */
  digest: Buffer;
}

export function modelPrefix(model: string, version?: string): string {
  return version === undefined ? `${model}@` : `${model}@${version}:`;
}

/** Tensor data up to this size is copied into the key material; larger goes to the hash as it is. */
const COPY_DATA_BELOW = 16 * 1024;

/**
 * The key material, written into one buffer and handed to the hash in as few updates as it
 * can: each `update` is a call into native code, and a request's key took dozens of them.
 */
class Material {
  /** Made only once some data is too large to copy: a small key is hashed in one call. */
  #hash: Hash | undefined;
  #buf = Buffer.allocUnsafe(1024);
  #at = 0;

  #room(bytes: number): void {
    if (this.#at + bytes <= this.#buf.byteLength) return;
    const grown = Buffer.allocUnsafe(Math.max(this.#buf.byteLength * 2, this.#at + bytes));
    this.#buf.copy(grown, 0, 0, this.#at);
    this.#buf = grown;
  }

  num(n: number): void {
    this.#room(4);
    this.#at = this.#buf.writeUInt32LE(n >>> 0, this.#at);
  }

  /** A dimension: any non-negative integer below 2^64, all 64 bits of it. */
  dim(n: number): void {
    // what BigInt and writeBigUInt64LE refused before, refused still: no two dimensions share bytes
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 64)
      throw new RangeError(`dimension ${n} is not a 64-bit unsigned integer`);
    this.#room(8);
    this.#at = this.#buf.writeUInt32LE(n % 2 ** 32, this.#at);
    this.#at = this.#buf.writeUInt32LE(Math.floor(n / 2 ** 32), this.#at);
  }

  /** Length-prefixed bytes. */
  field(bytes: Uint8Array | string): void {
    if (typeof bytes === 'string') {
      const length = Buffer.byteLength(bytes, 'utf8');
      this.num(length);
      this.#room(length);
      this.#at += this.#buf.write(bytes, this.#at, 'utf8');
      return;
    }
    this.num(bytes.byteLength);
    if (bytes.byteLength < COPY_DATA_BELOW) {
      this.#room(bytes.byteLength);
      this.#buf.set(bytes, this.#at);
      this.#at += bytes.byteLength;
      return;
    }
    this.#flush().update(bytes);
  }

  #flush(): Hash {
    this.#hash ??= createHash('sha256');
    if (this.#at > 0) this.#hash.update(this.#buf.subarray(0, this.#at));
    this.#at = 0;
    return this.#hash;
  }

  digest(): Buffer {
    if (this.#hash === undefined) return hashOnce('sha256', this.#buf.subarray(0, this.#at), 'buffer');
    return this.#flush().digest();
  }
}

export function cacheKey(
  model: string,
  version: string,
  /** The model version's generation (its config and model files): a reload changes every key. */
  generation: string,
  inputs: readonly Tensor[],
  outputs: readonly string[] | undefined,
  parameters: Parameters | undefined,
): CacheKey {
  const m = new Material();
  m.field(MATERIAL_VERSION);
  m.field(model);
  m.field(version);
  m.field(generation);
  const sorted =
    inputs.length < 2 ? inputs : [...inputs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  m.num(sorted.length);
  for (const t of sorted) {
    m.field(t.name);
    m.field(t.datatype);
    m.num(t.shape.length);
    for (const d of t.shape) m.dim(d);
    m.field(t.data);
  }
  if (outputs === undefined) m.num(0xffffffff);
  else {
    m.num(outputs.length);
    for (const o of outputs) m.field(o);
  }
  const names =
    parameters === undefined
      ? []
      : Object.keys(parameters)
          .filter((k) => !ENGINE_PARAMETERS.has(k))
          .sort();
  m.num(names.length);
  for (const name of names) {
    const value = parameters![name]!;
    m.field(name);
    m.field(typeof value);
    m.field(String(value));
  }
  const digest = m.digest();
  return { key: `${modelPrefix(model, version)}${digest.subarray(0, 16).toString('hex')}`, digest };
}
