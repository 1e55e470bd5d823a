/**
 * The decode loop of one LLM model instance (issue 21): one context, N sequences, and one
 * batch per step.
 *
 * Each step submits ONE batch (`DecodeContext.step`) holding, for every runnable sequence in
 * ascending sequence id, either its next token (decoding) or its next prompt chunk (prefill).
 * llama.cpp keeps one KV stream per sequence and packs only consecutive, increasing sequence
 * ids into one micro-batch, so ascending order in one submission is one pass over the weights.
 *
 * Step token budget (`stepTokens`): every decoding sequence's token goes in first, always; the
 * rest is shared by prefilling sequences in admission order (first come, first served), each
 * taking at most `prefillChunk` tokens. A long prompt therefore never stalls running streams
 * (their tokens are never displaced), and an older prompt finishes prefill before a newer one
 * starts taking budget. With stepTokens ≥ sequences a prefill always progresses.
 *
 * Admission happens between steps: a request joins at the next step, on the free sequence whose
 * cache its prompt matches best, else an empty or the least recently used one (prefix reuse,
 * llama-server's slot similarity: #pick); the rest of that sequence's KV is erased and only the
 * new suffix evaluated (at least one token, for logits). Finished, stopped and cancelled requests leave at the end of the
 * step they are in, and their sequence is free for the next one.
 *
 * Backpressure: a request whose reader is behind (`GenerationJob.blocked()`) sits out steps
 * until it catches up (it calls `wake()`); other sequences keep stepping. Cancellation: an
 * aborted request is in no step after the one running when it aborted, and the token that step
 * made for it is discarded.
 */

import { InfergridError } from '../errors.ts';
import type { SamplingOptions } from './request-options.ts';
import type { FinishReason } from './schema.ts';

export type Token = number;

/** How the next token of an item is sampled. */
export interface StepSampling extends SamplingOptions {
  /** Tokens the repeat penalty applies to (the sequence's recent tokens); empty when it is off. */
  penaltyTokens: readonly Token[];
  /** Never sample an end-of-generation token (min_tokens not reached, ignore_eos). */
  banEndOfGeneration: boolean;
}

export interface StepItem {
  sequence: number;
  /** Tokens appended to the sequence's KV this step (one while decoding, a chunk in prefill). */
  tokens: readonly Token[];
  /** Set when the next token is wanted after the last of `tokens`. */
  sample?: StepSampling | undefined;
}

/**
 * What the loop needs from a model context (node-llama-cpp's behind an adapter; tests use a
 * fake that records the batches).
 */
export interface DecodeContext {
  /** Sequences, with ids 0..sequences-1. */
  readonly sequences: number;
  /** Tokens one sequence holds. */
  readonly contextSize: number;
  /**
   * Evaluates one batch: every item's tokens appended to its sequence, in one decode. Resolves
   * with, per item, the sampled token (items with `sample`) or undefined. A rejection leaves the
   * KV of the step's sequences unknown; the loop then erases them.
   */
  step(items: readonly StepItem[]): Promise<Array<Token | undefined>>;
  /** Drops sequence's KV from token index `start` to its end. */
  erase(sequence: number, start: number): Promise<void>;
  isEndOfGeneration(token: Token): boolean;
}

export interface GenerationJob {
  prompt: readonly Token[];
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  sampling: SamplingOptions;
  signal: AbortSignal;
  /**
   * Takes one generated token (not end-of-generation ones). Returns true when the text ended
   * (a stop string completed): the request finishes with `stop`.
   */
  onToken(token: Token): boolean;
  /** True while the reader is behind: the sequence sits out steps until the job calls wake(). */
  blocked(): boolean;
}

export interface GenerationOutcome {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens found in the sequence's KV and not evaluated again. */
  cachedTokens: number;
  /** The sequence that served the request. */
  sequence: number;
}

export interface StepLoopOptions {
  /** Token budget of one step. Must be ≥ the context's sequences. */
  stepTokens: number;
  /** Most prompt tokens one sequence evaluates in one step (default: stepTokens). */
  prefillChunk?: number | undefined;
  /** Requests waiting for a free sequence; beyond it, OVERLOADED. */
  maxQueued: number;
  /** Off: a request takes any free sequence and its whole prompt is evaluated (default true). */
  prefixReuse?: boolean | undefined;
}

/** Counters, for metrics and tests. */
export interface StepLoopStats {
  steps: number;
  /** Prompt tokens evaluated (after prefix reuse). */
  promptTokensEvaluated: number;
  /** Prompt tokens served from a sequence's cache. */
  promptTokensCached: number;
  /** Tokens sampled (including end-of-generation and discarded ones). */
  tokensSampled: number;
  /** Requests given a sequence that shared a prefix with their prompt. */
  prefixHits: number;
}

/**
 * A free sequence's cache is a match for a prompt when they share at least this share of the
 * cache (llama-server's --slot-prompt-similarity default).
 */
export const PREFIX_MATCH_SHARE = 0.5;

/** Recent tokens the repeat penalty looks at (llama.cpp's default window). */
const REPEAT_PENALTY_WINDOW = 64;

interface Pending {
  job: GenerationJob;
  resolve(outcome: GenerationOutcome): void;
  reject(err: unknown): void;
  onAbort(): void;
}

interface Active extends Pending {
  sequence: number;
  /** Admission order, for the prefill budget. */
  admitted: number;
  /** Prompt tokens still to evaluate. */
  remaining: Token[];
  cachedTokens: number;
  completionTokens: number;
  /** The last sampled token, evaluated in the next step. */
  next: Token | undefined;
}

function cancelled(signal: AbortSignal): unknown {
  return signal.reason instanceof Error
    ? signal.reason
    : new InfergridError('CANCELLED', 'request cancelled');
}

function sharedPrefix(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class StepLoop {
  readonly stats: StepLoopStats = {
    steps: 0,
    promptTokensEvaluated: 0,
    promptTokensCached: 0,
    tokensSampled: 0,
    prefixHits: 0,
  };
  readonly #ctx: DecodeContext;
  readonly #stepTokens: number;
  readonly #prefillChunk: number;
  readonly #maxQueued: number;
  readonly #prefixReuse: boolean;
  /** Tokens in each sequence's KV, as this loop put them there. */
  readonly #cached: Token[][];
  /** When each sequence was last left (a clock of leaves), for least-recently-used picks. */
  readonly #lastUsed: number[];
  #clock = 0;
  readonly #active: Array<Active | undefined>;
  readonly #queue: Pending[] = [];
  #admissions = 0;
  #running = false;
  #closed: unknown;
  #wake: (() => void) | undefined;
  /** The running loop, if any. */
  #runs: Promise<void> | undefined;

  constructor(ctx: DecodeContext, options: StepLoopOptions) {
    if (!Number.isInteger(options.stepTokens) || options.stepTokens < ctx.sequences)
      throw new Error(`stepTokens must be an integer of at least sequences (${ctx.sequences})`);
    const chunk = options.prefillChunk ?? options.stepTokens;
    if (!Number.isInteger(chunk) || chunk < 1) throw new Error('prefillChunk must be a positive integer');
    if (!Number.isInteger(options.maxQueued) || options.maxQueued < 0)
      throw new Error('maxQueued must be a non-negative integer');
    this.#ctx = ctx;
    this.#stepTokens = options.stepTokens;
    this.#prefillChunk = Math.min(chunk, options.stepTokens);
    this.#maxQueued = options.maxQueued;
    this.#prefixReuse = options.prefixReuse ?? true;
    this.#cached = Array.from({ length: ctx.sequences }, () => []);
    this.#lastUsed = new Array(ctx.sequences).fill(0);
    this.#active = new Array(ctx.sequences).fill(undefined);
  }

  /** Requests generating now. */
  get running(): number {
    return this.#active.filter((a) => a !== undefined).length;
  }

  /** Requests waiting for a sequence. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** Tokens held in all sequences' KV caches now. */
  get kvTokens(): number {
    return this.#cached.reduce((n, c) => n + c.length, 0);
  }

  /** Tokens held in each sequence's KV (for tests and metrics). */
  cachedTokens(sequence: number): readonly Token[] {
    return this.#cached[sequence] ?? [];
  }

  /**
   * Queues a request; it joins at the next step once a sequence is free. Settles exactly once:
   * with the outcome, or rejected with the signal's reason (cancelled), OVERLOADED (queue full),
   * INVALID_ARGUMENT (prompt does not fit), or BACKEND_ERROR (the decode failed).
   */
  submit(job: GenerationJob): Promise<GenerationOutcome> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    if (job.signal.aborted) return Promise.reject(cancelled(job.signal));
    if (job.prompt.length === 0)
      return Promise.reject(new InfergridError('INVALID_ARGUMENT', 'the prompt is empty'));
    if (job.prompt.length >= this.#ctx.contextSize)
      return Promise.reject(
        new InfergridError(
          'INVALID_ARGUMENT',
          `the prompt has ${job.prompt.length} tokens; this model holds ${this.#ctx.contextSize} per request, completion included`,
        ),
      );
    // prompts that will still wait once the free sequences are taken (admission is at the next step)
    const free = this.#active.filter((a) => a === undefined).length;
    const waiting = Math.max(0, this.#queue.length - free);
    if (this.#queue.length >= free && waiting >= this.#maxQueued)
      return Promise.reject(
        new InfergridError(
          'OVERLOADED',
          `all ${this.#ctx.sequences} sequences are busy and ${waiting} prompts are waiting (llama.maxQueued ${this.#maxQueued})`,
        ),
      );
    return new Promise<GenerationOutcome>((resolve, reject) => {
      const pending: Pending = {
        job,
        resolve,
        reject,
        onAbort: () => {
          const i = this.#queue.indexOf(pending);
          if (i !== -1) {
            this.#queue.splice(i, 1);
            reject(cancelled(job.signal));
          }
          this.wake();
        },
      };
      job.signal.addEventListener('abort', pending.onAbort, { once: true });
      this.#queue.push(pending);
      this.#start();
      // the loop may be asleep with every running request blocked and a sequence free
      this.wake();
    });
  }

  /** Something changed outside the loop (a reader caught up): re-check who can run. */
  wake(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Rejects everything waiting or running with `reason`; the loop stops after its current step. */
  close(reason: unknown): void {
    if (this.#closed !== undefined) return;
    this.#closed = reason;
    for (const p of this.#queue.splice(0)) this.#settle(p, () => p.reject(reason));
    for (const a of this.#active) if (a) this.#leave(a, () => a.reject(reason));
    this.wake();
  }

  /** Resolves once no step is running (after close(): the context may then be disposed). */
  async idle(): Promise<void> {
    while (this.#runs !== undefined) await this.#runs;
  }

  #start(): void {
    if (this.#running) return;
    this.#running = true;
    // on the next macrotask, so requests submitted in the same tick share the first step
    const runs = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.#run())
      .catch((err) => this.close(new InfergridError('INTERNAL', 'the decode loop failed', { cause: err })))
      .finally(() => {
        if (this.#runs === runs) this.#runs = undefined;
      });
    this.#runs = runs;
  }

  async #run(): Promise<void> {
    try {
      while (this.#closed === undefined) {
        await this.#admit();
        for (const a of this.#active)
          if (a?.job.signal.aborted) this.#leave(a, () => a.reject(cancelled(a.job.signal)));
        const runnable = this.#active.filter((a): a is Active => a !== undefined && !a.job.blocked());
        if (runnable.length === 0) {
          if (this.running === 0 && this.#queue.length === 0) return;
          // a request queued while admission awaited: admit it now
          if (this.#queue.length > 0 && this.running < this.#ctx.sequences) continue;
          // every active request waits for its reader: sleep until one catches up or aborts
          await new Promise<void>((resolve) => {
            this.#wake = resolve;
          });
          continue;
        }
        await this.#step(runnable);
      }
    } finally {
      this.#running = false;
      this.#wake = undefined;
      if (this.#queue.length > 0 && this.#closed === undefined) this.#start();
    }
  }

  /** Gives queued requests the free sequences (see #pick). */
  async #admit(): Promise<void> {
    while (this.#queue.length > 0) {
      const free = this.#active.flatMap((a, i) => (a === undefined ? [i] : []));
      if (free.length === 0) return;
      const pending = this.#queue.shift()!;
      const prompt = pending.job.prompt;
      const { sequence: best, shared: bestShared, matched } = this.#pick(free, prompt);
      const keep = Math.min(bestShared, prompt.length - 1);
      const active: Active = {
        ...pending,
        sequence: best,
        admitted: this.#admissions++,
        remaining: prompt.slice(keep),
        cachedTokens: keep,
        completionTokens: 0,
        next: undefined,
      };
      this.#active[best] = active;
      if (matched) this.stats.prefixHits++;
      this.stats.promptTokensCached += keep;
      if (keep < this.#cached[best]!.length) {
        this.#cached[best]!.length = keep;
        try {
          await this.#ctx.erase(best, keep);
        } catch (err) {
          this.#cached[best]!.length = 0;
          this.#leave(active, () =>
            active.reject(
              new InfergridError('BACKEND_ERROR', 'could not free a sequence for the request', {
                cause: err,
              }),
            ),
          );
        }
      }
    }
  }

  /**
   * The free sequence for a prompt, as llama-server picks a slot: among the sequences whose
   * cache the prompt matches (a shared prefix of at least PREFIX_MATCH_SHARE of that cache), the
   * longest shared prefix; with none, an empty sequence, else the least recently used one. Taking
   * the longest shared prefix outright would let the tokens every prompt shares (BOS and the
   * first word piece) win over an empty sequence, and overwrite a cache another prompt could
   * reuse. Ties go to the shorter cache.
   */
  #pick(free: number[], prompt: readonly Token[]): { sequence: number; shared: number; matched: boolean } {
    let match: { sequence: number; shared: number } | undefined;
    let fallback: { sequence: number; shared: number; age: number } | undefined;
    for (const s of free) {
      const cached = this.#cached[s]!.length;
      const shared = this.#prefixReuse ? sharedPrefix(this.#cached[s]!, prompt) : 0;
      if (
        shared > 0 &&
        shared >= PREFIX_MATCH_SHARE * cached &&
        (match === undefined ||
          shared > match.shared ||
          (shared === match.shared && cached < this.#cached[match.sequence]!.length))
      )
        match = { sequence: s, shared };
      // an empty sequence before any that holds something, then the least recently used
      const age = cached === 0 ? -1 : this.#lastUsed[s]!;
      if (fallback === undefined || age < fallback.age) fallback = { sequence: s, shared, age };
    }
    if (match) return { ...match, matched: true };
    return { sequence: fallback!.sequence, shared: fallback!.shared, matched: false };
  }

  async #step(runnable: Active[]): Promise<void> {
    const decoding = runnable.filter((a) => a.remaining.length === 0).length;
    let budget = this.#stepTokens - decoding;
    const chunks = new Map<Active, number>();
    for (const a of [...runnable].sort((x, y) => x.admitted - y.admitted)) {
      if (a.remaining.length === 0) continue;
      const n = Math.min(a.remaining.length, this.#prefillChunk, budget);
      if (n <= 0) break;
      chunks.set(a, n);
      budget -= n;
    }
    const items: StepItem[] = [];
    const members: Active[] = [];
    for (const a of runnable) {
      // runnable is in ascending sequence id (it is a filter of #active)
      if (a.remaining.length === 0) {
        items.push({ sequence: a.sequence, tokens: [a.next!], sample: this.#sampling(a, [a.next!]) });
      } else {
        const n = chunks.get(a);
        if (n === undefined) continue; // no budget left this step: its prefill goes on next step
        const tokens = a.remaining.slice(0, n);
        const last = n === a.remaining.length;
        items.push({ sequence: a.sequence, tokens, sample: last ? this.#sampling(a, tokens) : undefined });
      }
      members.push(a);
    }

    this.stats.steps++;
    let results: Array<Token | undefined>;
    try {
      results = await this.#ctx.step(items);
    } catch (err) {
      for (const a of members) {
        this.#cached[a.sequence]!.length = 0;
        await this.#ctx.erase(a.sequence, 0).catch(() => {});
        this.#leave(a, () =>
          a.reject(new InfergridError('BACKEND_ERROR', 'the model failed to decode', { cause: err })),
        );
      }
      return;
    }

    for (const [i, a] of members.entries()) this.#afterStep(a, items[i]!, results[i]);
  }

  /** A step's result for one request: tokens recorded, then it goes on or leaves. */
  #afterStep(a: Active, item: StepItem, token: Token | undefined): void {
    this.#cached[a.sequence]!.push(...item.tokens);
    if (a.remaining.length > 0) {
      a.remaining = a.remaining.slice(item.tokens.length);
      this.stats.promptTokensEvaluated += item.tokens.length;
    }
    if (this.#active[a.sequence] !== a) return; // closed during the step
    if (a.job.signal.aborted) {
      this.#leave(a, () => a.reject(cancelled(a.job.signal)));
      return;
    }
    if (item.sample === undefined) return; // a prompt chunk before the last
    this.stats.tokensSampled++;
    if (token === undefined) {
      this.#leave(a, () => a.reject(new InfergridError('BACKEND_ERROR', 'the model sampled no token')));
      return;
    }
    if (this.#ctx.isEndOfGeneration(token) && !item.sample.banEndOfGeneration) {
      this.#finish(a, 'stop');
      return;
    }
    a.completionTokens++;
    a.next = token;
    let ended: boolean;
    try {
      ended = a.job.onToken(token);
    } catch (err) {
      this.#leave(a, () => a.reject(err));
      return;
    }
    if (ended) this.#finish(a, 'stop');
    else if (a.completionTokens >= a.job.maxTokens) this.#finish(a, 'length');
    // prompt and completion together fill the context (the last token needs no KV cell)
    else if (this.#cached[a.sequence]!.length + 1 >= this.#ctx.contextSize) this.#finish(a, 'length');
  }

  #sampling(a: Active, evaluated: readonly Token[]): StepSampling {
    const { sampling } = a.job;
    const position = this.#cached[a.sequence]!.length + evaluated.length;
    let penaltyTokens: readonly Token[] = [];
    if (sampling.repeatPenalty !== 1) {
      const cached = this.#cached[a.sequence]!;
      penaltyTokens = [...cached.slice(-REPEAT_PENALTY_WINDOW), ...evaluated].slice(-REPEAT_PENALTY_WINDOW);
    }
    return {
      ...sampling,
      // node-llama-cpp makes a new sampler per call, so a fixed seed would repeat every step
      seed: (sampling.seed + position) >>> 0,
      penaltyTokens,
      banEndOfGeneration: a.job.ignoreEos || a.completionTokens < a.job.minTokens,
    };
  }

  #finish(a: Active, finishReason: FinishReason): void {
    const outcome: GenerationOutcome = {
      finishReason,
      promptTokens: a.job.prompt.length,
      completionTokens: a.completionTokens,
      cachedTokens: a.cachedTokens,
      sequence: a.sequence,
    };
    this.#leave(a, () => a.resolve(outcome));
  }

  /** Frees the request's sequence and settles it. */
  #leave(a: Active, settle: () => void): void {
    if (this.#active[a.sequence] === a) this.#active[a.sequence] = undefined;
    this.#lastUsed[a.sequence] = ++this.#clock;
    this.#settle(a, settle);
  }

  #settle(p: Pending, settle: () => void): void {
    p.job.signal.removeEventListener('abort', p.onAbort);
    settle();
  }
}
