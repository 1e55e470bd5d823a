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

export interface PrefixMatch {
  /** The worker that last served the longest known prefix. */
  workerId: string;
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

/** The chained names of `prompt`'s whole blocks (a 53-bit number each: two seeds of FNV-1a). */
function blockNames(model: string, prompt: Uint8Array, o: PrefixIndexOptions): number[] {
  const modelBytes = Buffer.from(model, 'utf8');
  let a = fnv(modelBytes, 0, modelBytes.length, FNV_OFFSET);
  let b = fnv(modelBytes, 0, modelBytes.length, 0x9e3779b9);
  const blocks = Math.min(o.maxBlocks, Math.floor(prompt.length / o.blockBytes));
  const names: number[] = [];
  for (let i = 0; i < blocks; i++) {
    const from = i * o.blockBytes;
    a = fnv(prompt, from, from + o.blockBytes, a);
    b = fnv(prompt, from, from + o.blockBytes, b ^ i);
    names.push((a & 0x1fffff) * 0x100000000 + b);
  }
  return names;
}

export class PrefixIndex {
  readonly #options: PrefixIndexOptions;
  readonly #owners: LRUCache<number, string>;
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
   * The worker of the longest known prefix of `prompt` among `candidates` (a worker that is
   * not a candidate, e.g. gone or excluded, does not count), or undefined.
   */
  lookup(model: string, prompt: Uint8Array, candidates: ReadonlySet<string>): PrefixMatch | undefined {
    this.queries++;
    const names = blockNames(model, prompt, this.#options);
    for (let i = names.length - 1; i >= 0; i--) {
      const owner = this.#owners.get(names[i]!);
      if (owner !== undefined && candidates.has(owner)) {
        this.hits++;
        return { workerId: owner, bytes: (i + 1) * this.#options.blockBytes };
      }
    }
    return undefined;
  }

  /** `workerId` now holds `prompt`: every block of it names that worker. */
  record(model: string, prompt: Uint8Array, workerId: string): void {
    for (const name of blockNames(model, prompt, this.#options)) this.#owners.set(name, workerId);
  }

  /** A worker left: its entries stop answering (they age out of the LRU). */
  forgetWorker(workerId: string): void {
    for (const [name, owner] of this.#owners.entries()) if (owner === workerId) this.#owners.delete(name);
  }
}
