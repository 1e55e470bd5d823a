/**
 * Which worker holds which prompt prefix, for prefix-aware routing of LLM requests (a worker
 * that evaluated a prompt keeps its tokens in a sequence and evaluates only the new suffix of a
 * prompt that extends it).
 *
 * The coordinator has no tokenizer, so prefixes are counted in bytes of the request's prompt
 * input: the prompt is cut into blocks of `blockBytes`, and block i is named by a hash chained
 * over blocks 0..i (and the model), so two prompts share block i's name only when they share
 * everything up to its end. Each name maps to the worker that last served a prompt with that
 * prefix. A lookup walks the blocks and answers the worker of the deepest block still known.
 *
 * The state is bounded, whatever the traffic: at most `maxEntries` names (least recently used
 * dropped first), each forgotten after `ttlMs` unused, and at most `maxBlocks` blocks of a
 * prompt are considered. A name is two 32-bit hashes; a collision costs a worse pick, never a
 * wrong answer.
 */

import { LRUCache } from 'lru-cache';

export interface PrefixIndexOptions {
  /** Bytes per block: a prefix counts in whole blocks. */
  blockBytes: number;
  /** Blocks of a prompt considered (the rest is never matched). */
  maxBlocks: number;
  /** Names kept at most (each about 100 bytes with the LRU's bookkeeping). */
  maxEntries: number;
  /** A name unused for this long is forgotten, ms. */
  ttlMs: number;
}

export interface PrefixMatch<W> {
  /** The candidate that last served the longest known prefix. */
  worker: W;
  /** Its length, in bytes (whole blocks). */
  bytes: number;
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over `bytes[from, to)`, continuing from `seed`. */
function fnv(bytes: Uint8Array, from: number, to: number, seed: number): number {
  let h = seed;
  for (let i = from; i < to; i++) h = Math.imul(h ^ bytes[i]!, FNV_PRIME);
  return h >>> 0;
}

export class PrefixIndex {
  readonly #options: PrefixIndexOptions;
  readonly #owners: LRUCache<number, string>;
  /** The two hash seeds of each model's name, made once. */
  readonly #seeds = new Map<string, [number, number]>();
  /** Lookups, and lookups that found a prefix, for metrics. */
  queries = 0;
  hits = 0;

  constructor(options: PrefixIndexOptions) {
    this.#options = options;
    this.#owners = new LRUCache<number, string>({
      max: options.maxEntries,
      ttl: options.ttlMs,
      ttlAutopurge: false,
    });
  }

  /** Names held now (never more than maxEntries). */
  get size(): number {
    return this.#owners.size;
  }

  /**
   * The chained names of `prompt`'s whole blocks (53-bit numbers: two FNV-1a streams, seeded
   * from the model, in one pass). Computed once per pick, for the lookup and the record.
   */
  names(model: string, prompt: Uint8Array): number[] {
    let seed = this.#seeds.get(model);
    if (seed === undefined) {
      const m = Buffer.from(model, 'utf8');
      seed = [fnv(m, 0, m.length, FNV_OFFSET), fnv(m, 0, m.length, 0x9e3779b9)];
      this.#seeds.set(model, seed);
    }
    let [a, b] = seed;
    const { blockBytes, maxBlocks } = this.#options;
    const blocks = Math.min(maxBlocks, Math.floor(prompt.length / blockBytes));
    const names = new Array<number>(blocks);
    for (let i = 0, at = 0; i < blocks; i++) {
      b ^= i;
      for (const end = at + blockBytes; at < end; at++) {
        const x = prompt[at]!;
        a = Math.imul(a ^ x, FNV_PRIME);
        b = Math.imul(b ^ x, FNV_PRIME);
      }
      names[i] = ((a >>> 0) & 0x1fffff) * 0x100000000 + (b >>> 0);
    }
    return names;
  }

  /**
   * The candidate holding the longest known prefix named by `names` (a worker that is not a
   * candidate, e.g. gone or excluded, does not count), with that prefix's length in bytes.
   */
  match<W extends { readonly id: string }>(
    names: readonly number[],
    candidates: readonly W[],
  ): PrefixMatch<W> | undefined {
    this.queries++;
    for (let i = names.length - 1; i >= 0; i--) {
      const owner = this.#owners.get(names[i]!);
      const worker = owner === undefined ? undefined : candidates.find((c) => c.id === owner);
      if (worker) {
        this.hits++;
        return { worker, bytes: (i + 1) * this.#options.blockBytes };
      }
    }
    return undefined;
  }

  /** `workerId` now holds the prompt `names` came from: every block of it names that worker. */
  record(names: readonly number[], workerId: string): void {
    for (const name of names) this.#owners.set(name, workerId);
  }

  /** A worker left: its entries stop answering (they age out of the LRU). */
  forgetWorker(workerId: string): void {
    for (const [name, owner] of this.#owners.entries()) if (owner === workerId) this.#owners.delete(name);
  }
}
