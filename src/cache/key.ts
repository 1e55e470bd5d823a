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

import { createHash } from 'node:crypto';
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

export function cacheKey(
  model: string,
  version: string,
  /** The model version's generation (its config and model files): a reload changes every key. */
  generation: string,
  inputs: readonly Tensor[],
  outputs: readonly string[] | undefined,
  parameters: Parameters | undefined,
): CacheKey {
  const hash = createHash('sha256');
  const u32 = Buffer.alloc(4);
  const num = (n: number): void => {
    u32.writeUInt32LE(n >>> 0, 0);
    hash.update(u32);
  };
  const u64 = Buffer.alloc(8);
  /** A dimension: any non-negative safe integer, all 64 bits of it. */
  const dim = (n: number): void => {
    u64.writeBigUInt64LE(BigInt(n), 0);
    hash.update(u64);
  };
  const field = (bytes: Uint8Array | string): void => {
    const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    num(b.byteLength);
    hash.update(b);
  };
  field(MATERIAL_VERSION);
  field(model);
  field(version);
  field(generation);
  const sorted = [...inputs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  num(sorted.length);
  for (const t of sorted) {
    field(t.name);
    field(t.datatype);
    num(t.shape.length);
    for (const d of t.shape) dim(d);
    field(t.data);
  }
  if (outputs === undefined) num(0xffffffff);
  else {
    num(outputs.length);
    for (const o of outputs) field(o);
  }
  const names = Object.keys(parameters ?? {})
    .filter((k) => !ENGINE_PARAMETERS.has(k))
    .sort();
  num(names.length);
  for (const name of names) {
    const value = parameters![name]!;
    field(name);
    field(typeof value);
    field(String(value));
  }
  const digest = hash.digest();
  return { key: `${modelPrefix(model, version)}${digest.subarray(0, 16).toString('hex')}`, digest };
}
